using System.CommandLine;
using Crisp.Checkpoint.Check;

namespace Crisp.Cli;

/// <summary>`crisp check`: like `criu check`, what the kernel offers that crisp needs.</summary>
public static class CheckCommand
{
    public static Command Create()
    {
        var cmd = new Command("check", "Check that the kernel offers what crisp needs");
        cmd.SetAction(_ => Run());
        return cmd;
    }

    public static int Run()
    {
        var answers = KernelCheck.Probe();
        var features = KernelCheck.Evaluate(answers);
        Console.WriteLine($"Kernel {answers.KernelRelease}");
        foreach (var f in features)
            Console.WriteLine($"  {(f.Present ? "yes" : f.Required ? "NO" : "no"),-3}  {f.Name,-28} {f.Detail}");
        // The CPU a dump made here records (cpuinfo.img), which a restore elsewhere is checked against.
        var cpu = Crisp.Checkpoint.Cpu.CpuFeatures.Host();
        Console.WriteLine($"CPU {cpu.VendorId} family {cpu.CpuFamily} model {cpu.Model} stepping {cpu.Stepping}: {cpu.ModelId}");
        Console.WriteLine($"  XSAVE {string.Join(" ", Crisp.Checkpoint.Cpu.CpuFeatures.XfeatureList(cpu.XfeaturesMask))} (area {cpu.XsaveSize} bytes, max {cpu.XsaveSizeMax})");
        Console.WriteLine($"  instructions {string.Join(" ", Crisp.Checkpoint.Cpu.CpuFeatures.InstructionNames(cpu))}");
        var missing = features.Where(f => !f.Present && f.Required).ToList();
        if (missing.Count == 0)
        {
            Console.WriteLine("Looks good.");
            return CrispCommand.ExitOk;
        }
        foreach (var f in missing)
            Console.WriteLine($"Missing {f.Name}: affects {f.NeededBy}");
        return CrispCommand.ExitFailed;
    }
}
