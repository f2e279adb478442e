using Crisp.Native.ProcFs;

namespace Crisp.Integration.Tests.Support;

/// <summary>
/// What the kernel shows about a process from outside, as "key = value" lines, so that a
/// snapshot taken just before a dump and one taken just after the restore can be compared
/// line by line. Everything is taken except what <see cref="Differs"/> names, each with the
/// reason it may change across a faithful dump and restore; a difference anywhere else is a
/// state crisp lost or changed.
/// </summary>
public sealed class ProcessSnapshot
{
    /// <summary>status fields that change without any state being lost, and why.</summary>
    public static readonly IReadOnlyDictionary<string, string> Differs = new Dictionary<string, string>
    {
        // Memory use: restore writes only the pages that were present, and the dump's own
        // reads and the restore's writes fault page tables in differently.
        ["VmPeak"] = "peak over the process's life; the restored process started small",
        ["VmHWM"] = "peak over the process's life",
        ["VmRSS"] = "resident pages: the restore maps what the image has, not what was resident",
        ["RssAnon"] = "resident pages", ["RssFile"] = "resident pages (file pages are faulted in again)",
        ["RssShmem"] = "resident pages", ["VmPTE"] = "page-table memory follows what is resident",
        ["VmLck"] = "locked memory is not restored locked yet (dumps of mlock'ed VMAs keep the flag in smaps)",
        ["VmSwap"] = "swapped pages come back resident",
        // Counters of the task's life so far.
        ["voluntary_ctxt_switches"] = "counter", ["nonvoluntary_ctxt_switches"] = "counter",
        // The size of the fd table array grows by powers of two with the highest fd ever used: crisp's
        // restore opens temporary fds above the dumped ones.
        ["FDSize"] = "fd table capacity, not content",
        // Pending-signal count against RLIMIT_SIGPENDING of the whole user: other processes count too.
        ["SigQ"] = "per-user count, shared with every process of the uid",
        // The snapshot before is taken with the tree frozen by the dump (so nothing moves between
        // it and the images); the one after, with the process running again.
        ["State"] = "t (tracing stop) while frozen by the dump",
        ["TracerPid"] = "the dumping crisp while frozen",
    };

    /// <summary>The state as lines; <see cref="Diff"/> compares two of them.</summary>
    public SortedDictionary<string, string> Lines { get; } = new(StringComparer.Ordinal);

    public static ProcessSnapshot Take(int pid)
    {
        var s = new ProcessSnapshot();
        foreach (var (k, v) in Proc.Status(pid).Fields)
            if (!Differs.ContainsKey(k)) s.Lines[$"status.{k}"] = v;
        foreach (int tid in Proc.Tasks(pid))
        {
            string name = tid == pid ? "leader" : $"thread{Proc.Tasks(pid).IndexOf(tid)}";
            var ts = Proc.TaskStatus(pid, tid).Fields;
            foreach (var k in new[] { "Name", "SigBlk", "SigPnd", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Cpus_allowed_list", "Uid", "Gid" })
                s.Lines[$"{name}.{k}"] = ts.TryGetValue(k, out var v) ? v : "-";
            var st = File.ReadAllText($"/proc/{pid}/task/{tid}/stat");
            var f = st[(st.LastIndexOf(')') + 2)..].Split(' ');
            // Field numbers of proc(5) minus 3 (pid and comm are cut off): priority 18, nice 19,
            // rt_priority 40, policy 41.
            s.Lines[$"{name}.sched"] = $"priority {f[15]} nice {f[16]} rt_priority {f[37]} policy {f[38]}";
            s.Lines[$"{name}.loginuid"] = Read($"/proc/{pid}/task/{tid}/loginuid");
        }
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var sf = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        s.Lines["stat.ppid pgrp session tty_nr"] = string.Join(' ', sf[1..5]);
        s.Lines["stat.num_threads exit_signal"] = $"{sf[17]} {sf[35]}";
        foreach (var file in new[] { "limits", "oom_score_adj", "personality", "timers", "timerslack_ns", "cmdline", "environ", "cgroup", "cwd", "root" })
            s.Lines[file] = file is "cwd" or "root" ? new FileInfo($"/proc/{pid}/{file}").LinkTarget ?? "?" : Read($"/proc/{pid}/{file}");
        foreach (var v in Proc.Smaps(pid))
            s.Lines[$"vma {v.Start:x}-{v.End:x}"] = $"{v} dev {v.DevMajor}:{v.DevMinor} ino {v.Inode} flags {string.Join(' ', v.RawVmFlags)}";
        // A restored pipe is a new pipe: its inode number is the kernel's choice. Pipes are named by
        // the order they first appear in, so which fds share a pipe is still compared.
        var pipes = new Dictionary<string, string>();
        foreach (int fd in Proc.Fds(pid))
        {
            string target = Proc.FdTarget(pid, fd);
            string? pipe = null;
            if (target.StartsWith("pipe:[", StringComparison.Ordinal))
            {
                if (!pipes.TryGetValue(target, out pipe)) pipes[target] = pipe = $"#{pipes.Count + 1}";
                target = $"pipe:[{pipe}]";
            }
            s.Lines[$"fd {fd}"] = target;
            foreach (var line in File.ReadAllLines($"/proc/{pid}/fdinfo/{fd}"))
            {
                int c = line.IndexOf(':');
                if (c <= 0) continue;
                string key = line[..c];
                // mnt_id and ino name the same file; pos/flags/owner/locks are the state.
                s.Lines[$"fd {fd}.{key}"] = key == "ino" && pipe != null ? pipe : line[(c + 1)..].Trim();
            }
        }
        return s;
    }

    /// <summary>
    /// A private VMA without write permission that the dump's own syscall injection wrote its
    /// <c>syscall; int3</c> into (a libc text page, copy-on-written by ptrace) holds an anonymous
    /// page in the image; restore maps such a VMA writable to fill it and mprotects it after,
    /// which leaves VM_ACCOUNT ("ac") on it. Only the letter differs: the VMA's size is charged
    /// against the overcommit limit (Committed_AS), nothing the process can see or use.
    /// </summary>
    private static bool AccountedAfterInjection(string before, string after)
    {
        int perms = before.IndexOf(' ') + 1;
        if (perms <= 0 || before[perms + 1] == 'w' || before[perms + 3] != 'p') return false;
        return !before.EndsWith(" ac", StringComparison.Ordinal) && !before.Contains(" ac ", StringComparison.Ordinal) &&
               (after == before + " ac" || after.Replace(" ac ", " ", StringComparison.Ordinal) == before);
    }

    private static string Read(string path)
    {
        try { return File.ReadAllText(path).Replace('\0', ' ').TrimEnd(); }
        catch (IOException e) { return $"({e.GetType().Name})"; }
    }

    /// <summary>Every line that differs, "key: before -> after", except the keys <paramref name="explained"/> accepts.</summary>
    public static List<string> Diff(ProcessSnapshot before, ProcessSnapshot after, Func<string, bool>? explained = null)
    {
        var diffs = new List<string>();
        foreach (var key in before.Lines.Keys.Union(after.Lines.Keys).Order(StringComparer.Ordinal))
        {
            before.Lines.TryGetValue(key, out var b);
            after.Lines.TryGetValue(key, out var a);
            if (b == a || explained?.Invoke(key) == true) continue;
            if (b != null && a != null && key.StartsWith("vma ", StringComparison.Ordinal) && AccountedAfterInjection(b, a)) continue;
            diffs.Add($"{key}: {b ?? "(none)"} -> {a ?? "(none)"}");
        }
        return diffs;
    }
}
