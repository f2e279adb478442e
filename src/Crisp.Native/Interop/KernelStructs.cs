using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>
/// Kernel structs (x86-64 layouts) that crisp passes to syscalls it runs in other tasks: the
/// dump reads them back from a task, the restore writes them into one. Declared once here.
/// </summary>
public static unsafe partial class LibC
{
    /// <summary>struct clone_args (clone3), CLONE_ARGS_SIZE_VER2: 88 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct clone_args
    {
        public ulong flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
    }

    /// <summary>struct prctl_mm_map (PR_SET_MM_MAP): 104 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct prctl_mm_map
    {
        public ulong start_code, end_code, start_data, end_data, start_brk, brk, start_stack, arg_start, arg_end, env_start, env_end;
        public ulong auxv;
        public uint auxv_size;
        public int exe_fd;
    }

    /// <summary>The kernel's struct sigaction (rt_sigaction, x86-64): handler, flags, restorer, mask; 32 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct kernel_sigaction { public ulong handler, flags, restorer, mask; }

    /// <summary>stack_t (sigaltstack): 24 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct stack_t { public ulong ss_sp; public int ss_flags; public int pad; public ulong ss_size; }
}
