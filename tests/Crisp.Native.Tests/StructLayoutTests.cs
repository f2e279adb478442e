using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Native.Tests;

/// <summary>Our struct layouts and ioctl numbers against what gcc sees in the system headers.</summary>
public unsafe class StructLayoutTests : IClassFixture<StructLayoutTests.CFacts>
{
    public sealed class CFacts : IDisposable
    {
        private readonly TempDir _dir = new();
        public Dictionary<string, ulong> Values { get; } = new();

        public CFacts()
        {
            string output;
            try { output = Gcc.Run(_dir, "layout", Source); }
            catch { _dir.Dispose(); throw; }
            foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                var parts = line.Split(' ');
                Values[parts[0]] = ulong.Parse(parts[1], CultureInfo.InvariantCulture);
            }
        }

        public void Dispose() => _dir.Dispose();

        private const string Source = """
            #define _GNU_SOURCE
            #include <stdio.h>
            #include <stddef.h>
            #include <signal.h>
            #include <sys/user.h>
            #include <sys/uio.h>
            #include <sys/ioctl.h>
            #include <sys/socket.h>
            #include <linux/userfaultfd.h>
            #include <linux/ptrace.h>
            #include <linux/sched.h>
            #include <linux/prctl.h>
            /* The installed headers are Linux 6.1; these arrived later (6.6 POISON, 6.8 MOVE).
               Declared from the kernel's uapi layout so the ioctl encoding is still computed by _IOWR. */
            #ifndef UFFDIO_POISON
            struct uffdio_poison { struct uffdio_range range; __u64 mode; __s64 updated; };
            #define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)
            #endif
            #ifndef UFFDIO_MOVE
            struct uffdio_move { __u64 dst; __u64 src; __u64 len; __u64 mode; __s64 move; };
            #define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
            #endif
            #define S(t) printf("sizeof_%s %zu\n", #t, sizeof(struct t))
            #define O(t, f) printf("offsetof_%s_%s %zu\n", #t, #f, offsetof(struct t, f))
            #define C(n) printf("%s %llu\n", #n, (unsigned long long)(n))
            int main(void) {
              S(user_regs_struct); O(user_regs_struct, rax); O(user_regs_struct, orig_rax); O(user_regs_struct, rip);
              O(user_regs_struct, fs_base); O(user_regs_struct, gs_base); O(user_regs_struct, gs);
              S(user_fpregs_struct); O(user_fpregs_struct, mxcsr); O(user_fpregs_struct, st_space); O(user_fpregs_struct, xmm_space);
              S(iovec); S(msghdr); O(msghdr, msg_iov); O(msghdr, msg_iovlen); O(msghdr, msg_control);
              O(msghdr, msg_controllen); O(msghdr, msg_flags); S(cmsghdr); O(cmsghdr, cmsg_type);
              S(uffdio_api); S(uffdio_range); S(uffdio_register); O(uffdio_register, mode); O(uffdio_register, ioctls);
              S(uffdio_copy); O(uffdio_copy, copy); S(uffdio_zeropage); O(uffdio_zeropage, zeropage);
              S(uffdio_poison); O(uffdio_poison, updated); S(uffdio_writeprotect);
              S(uffd_msg);
              printf("offsetof_uffd_msg_pf_flags %zu\n", offsetof(struct uffd_msg, arg.pagefault.flags));
              printf("offsetof_uffd_msg_pf_address %zu\n", offsetof(struct uffd_msg, arg.pagefault.address));
              printf("offsetof_uffd_msg_pf_ptid %zu\n", offsetof(struct uffd_msg, arg.pagefault.feat.ptid));
              printf("offsetof_uffd_msg_fork_ufd %zu\n", offsetof(struct uffd_msg, arg.fork.ufd));
              printf("offsetof_uffd_msg_remap_from %zu\n", offsetof(struct uffd_msg, arg.remap.from));
              printf("offsetof_uffd_msg_remap_to %zu\n", offsetof(struct uffd_msg, arg.remap.to));
              printf("offsetof_uffd_msg_remap_len %zu\n", offsetof(struct uffd_msg, arg.remap.len));
              printf("offsetof_uffd_msg_remove_start %zu\n", offsetof(struct uffd_msg, arg.remove.start));
              printf("offsetof_uffd_msg_remove_end %zu\n", offsetof(struct uffd_msg, arg.remove.end));
              S(ptrace_peeksiginfo_args); O(ptrace_peeksiginfo_args, flags); O(ptrace_peeksiginfo_args, nr);
              S(ptrace_rseq_configuration); O(ptrace_rseq_configuration, rseq_abi_size); O(ptrace_rseq_configuration, signature);
              O(ptrace_rseq_configuration, flags);
              printf("sizeof_siginfo_t %zu\n", sizeof(siginfo_t));
              printf("offsetof_siginfo_code %zu\n", offsetof(siginfo_t, si_code));
              printf("offsetof_siginfo_pid %zu\n", offsetof(siginfo_t, si_pid));
              S(clone_args); O(clone_args, exit_signal); O(clone_args, set_tid); O(clone_args, set_tid_size); O(clone_args, cgroup);
              S(prctl_mm_map); O(prctl_mm_map, auxv); O(prctl_mm_map, auxv_size); O(prctl_mm_map, exe_fd);
              printf("sizeof_stack_t %zu\n", sizeof(stack_t));
              printf("offsetof_stack_t_ss_flags %zu\n", offsetof(stack_t, ss_flags));
              printf("offsetof_stack_t_ss_size %zu\n", offsetof(stack_t, ss_size));
              C(UFFDIO_API); C(UFFDIO_REGISTER); C(UFFDIO_UNREGISTER); C(UFFDIO_WAKE); C(UFFDIO_COPY);
              C(UFFDIO_ZEROPAGE); C(UFFDIO_MOVE); C(UFFDIO_WRITEPROTECT); C(UFFDIO_CONTINUE); C(UFFDIO_POISON);
              C(UFFD_API); C(USERFAULTFD_IOC_NEW);
              C(UFFD_EVENT_PAGEFAULT); C(UFFD_EVENT_FORK); C(UFFD_EVENT_REMAP); C(UFFD_EVENT_REMOVE); C(UFFD_EVENT_UNMAP);
              #ifdef UFFD_FEATURE_MOVE
              C(UFFD_FEATURE_MOVE); C(UFFD_FEATURE_POISON); C(UFFD_FEATURE_WP_ASYNC);
              #endif
              C(PTRACE_SEIZE); C(PTRACE_INTERRUPT); C(PTRACE_PEEKSIGINFO); C(PTRACE_GETSIGMASK); C(PTRACE_GET_RSEQ_CONFIGURATION);
              C(PTRACE_GET_SYSCALL_INFO); C(PTRACE_O_EXITKILL); C(PTRACE_EVENT_STOP); C(PTRACE_PEEKSIGINFO_SHARED);
              return 0;
            }
            """;
    }

    private readonly Dictionary<string, ulong> _c;

    public StructLayoutTests(CFacts facts) => _c = facts.Values;

    private void Size<T>(string cName) where T : unmanaged =>
        Assert.True((ulong)sizeof(T) == _c["sizeof_" + cName], $"sizeof({cName}): C {_c["sizeof_" + cName]}, C# {sizeof(T)}");

    private void Offset<T>(string cName, string cField, string csField) where T : unmanaged
    {
        ulong c = _c[$"offsetof_{cName}_{cField}"];
        ulong cs = (ulong)Marshal.OffsetOf<T>(csField);
        Assert.True(c == cs, $"offsetof({cName}.{cField}): C {c}, C# {cs}");
    }

    private void Const(string name, ulong value) =>
        Assert.True(_c[name] == value, $"{name}: C 0x{_c[name]:x}, C# 0x{value:x}");

    [Fact]
    public void Registers_match_the_kernel_user_structs()
    {
        Size<UserRegs>("user_regs_struct");
        foreach (var f in new[] { "rax", "orig_rax", "rip", "fs_base", "gs_base", "gs" })
            Offset<UserRegs>("user_regs_struct", f, f);
        Size<UserFpregs>("user_fpregs_struct");
        Offset<UserFpregs>("user_fpregs_struct", "mxcsr", "mxcsr");
        Assert.Equal(_c["offsetof_user_fpregs_struct_st_space"], (ulong)Marshal.OffsetOf<UserFpregs>("st_space"));
        Assert.Equal(_c["offsetof_user_fpregs_struct_xmm_space"], (ulong)Marshal.OffsetOf<UserFpregs>("xmm_space"));
    }

    [Fact]
    public void Structs_passed_to_injected_calls_match()
    {
        Size<LibC.clone_args>("clone_args");
        foreach (var f in new[] { "exit_signal", "set_tid", "set_tid_size", "cgroup" })
            Offset<LibC.clone_args>("clone_args", f, f);
        Size<LibC.prctl_mm_map>("prctl_mm_map");
        foreach (var f in new[] { "auxv", "auxv_size", "exe_fd" })
            Offset<LibC.prctl_mm_map>("prctl_mm_map", f, f);
        Size<LibC.stack_t>("stack_t");
        Offset<LibC.stack_t>("stack_t", "ss_flags", "ss_flags");
        Offset<LibC.stack_t>("stack_t", "ss_size", "ss_size");
        // The kernel's struct sigaction (arch/x86 uapi, not what glibc's <signal.h> declares): four u64.
        Assert.Equal(32, sizeof(LibC.kernel_sigaction));
    }

    [Fact]
    public void Socket_structs_match()
    {
        Size<LibC.iovec>("iovec");
        Size<LibC.msghdr>("msghdr");
        foreach (var f in new[] { "msg_iov", "msg_iovlen", "msg_control", "msg_controllen", "msg_flags" })
            Offset<LibC.msghdr>("msghdr", f, f);
        Size<LibC.cmsghdr>("cmsghdr");
        Offset<LibC.cmsghdr>("cmsghdr", "cmsg_type", "cmsg_type");
    }

    [Fact]
    public void Userfaultfd_structs_match()
    {
        Size<LibC.uffdio_api>("uffdio_api");
        Size<LibC.uffdio_range>("uffdio_range");
        Size<LibC.uffdio_register>("uffdio_register");
        Offset<LibC.uffdio_register>("uffdio_register", "mode", "mode");
        Offset<LibC.uffdio_register>("uffdio_register", "ioctls", "ioctls");
        Size<LibC.uffdio_copy>("uffdio_copy");
        Offset<LibC.uffdio_copy>("uffdio_copy", "copy", "copy");
        Size<LibC.uffdio_zeropage>("uffdio_zeropage");
        Offset<LibC.uffdio_zeropage>("uffdio_zeropage", "zeropage", "zeropage");
        Size<LibC.uffdio_poison>("uffdio_poison");
        Offset<LibC.uffdio_poison>("uffdio_poison", "updated", "updated");
        Size<LibC.uffdio_writeprotect>("uffdio_writeprotect");
        Size<LibC.uffd_msg>("uffd_msg");
        foreach (var f in new[] { "pf_flags", "pf_address", "pf_ptid", "fork_ufd", "remap_from", "remap_to", "remap_len", "remove_start", "remove_end" })
            Offset<LibC.uffd_msg>("uffd_msg", f, f);
    }

    [Fact]
    public void Ptrace_structs_match()
    {
        Size<LibC.ptrace_peeksiginfo_args>("ptrace_peeksiginfo_args");
        Offset<LibC.ptrace_peeksiginfo_args>("ptrace_peeksiginfo_args", "flags", "flags");
        Offset<LibC.ptrace_peeksiginfo_args>("ptrace_peeksiginfo_args", "nr", "nr");
        Offset<LibC.ptrace_rseq_configuration>("ptrace_rseq_configuration", "rseq_abi_size", "rseq_abi_size");
        Offset<LibC.ptrace_rseq_configuration>("ptrace_rseq_configuration", "signature", "signature");
        Offset<LibC.ptrace_rseq_configuration>("ptrace_rseq_configuration", "flags", "flags");
        Size<LibC.ptrace_rseq_configuration>("ptrace_rseq_configuration");
        Assert.Equal(_c["sizeof_siginfo_t"], (ulong)sizeof(SigInfo));
        Assert.Equal(_c["offsetof_siginfo_code"], (ulong)Marshal.OffsetOf<SigInfo>("si_code"));
        Assert.Equal(_c["offsetof_siginfo_pid"], (ulong)Marshal.OffsetOf<SigInfo>("fields"));
    }

    [Fact]
    public void Ioctl_numbers_and_flags_match()
    {
        Const("UFFDIO_API", LibC.UFFDIO_API);
        Const("UFFDIO_REGISTER", LibC.UFFDIO_REGISTER);
        Const("UFFDIO_UNREGISTER", LibC.UFFDIO_UNREGISTER);
        Const("UFFDIO_WAKE", LibC.UFFDIO_WAKE);
        Const("UFFDIO_COPY", LibC.UFFDIO_COPY);
        Const("UFFDIO_ZEROPAGE", LibC.UFFDIO_ZEROPAGE);
        Const("UFFDIO_MOVE", LibC.UFFDIO_MOVE);
        Const("UFFDIO_WRITEPROTECT", LibC.UFFDIO_WRITEPROTECT);
        Const("UFFDIO_CONTINUE", LibC.UFFDIO_CONTINUE);
        Const("UFFDIO_POISON", LibC.UFFDIO_POISON);
        Const("UFFD_API", LibC.UFFD_API);
        Const("USERFAULTFD_IOC_NEW", LibC.USERFAULTFD_IOC_NEW);
        Const("UFFD_EVENT_PAGEFAULT", LibC.UFFD_EVENT_PAGEFAULT);
        Const("UFFD_EVENT_FORK", LibC.UFFD_EVENT_FORK);
        Const("UFFD_EVENT_REMAP", LibC.UFFD_EVENT_REMAP);
        Const("UFFD_EVENT_REMOVE", LibC.UFFD_EVENT_REMOVE);
        Const("UFFD_EVENT_UNMAP", LibC.UFFD_EVENT_UNMAP);
        if (_c.ContainsKey("UFFD_FEATURE_MOVE")) // only with headers newer than 6.8
        {
            Const("UFFD_FEATURE_MOVE", LibC.UFFD_FEATURE_MOVE);
            Const("UFFD_FEATURE_POISON", LibC.UFFD_FEATURE_POISON);
            Const("UFFD_FEATURE_WP_ASYNC", LibC.UFFD_FEATURE_WP_ASYNC);
        }
        Const("PTRACE_SEIZE", LibC.PTRACE_SEIZE);
        Const("PTRACE_INTERRUPT", LibC.PTRACE_INTERRUPT);
        Const("PTRACE_PEEKSIGINFO", LibC.PTRACE_PEEKSIGINFO);
        Const("PTRACE_GETSIGMASK", LibC.PTRACE_GETSIGMASK);
        Const("PTRACE_GET_RSEQ_CONFIGURATION", LibC.PTRACE_GET_RSEQ_CONFIGURATION);
        Const("PTRACE_GET_SYSCALL_INFO", LibC.PTRACE_GET_SYSCALL_INFO);
        Const("PTRACE_O_EXITKILL", LibC.PTRACE_O_EXITKILL);
        Const("PTRACE_EVENT_STOP", LibC.PTRACE_EVENT_STOP);
        Const("PTRACE_PEEKSIGINFO_SHARED", LibC.PTRACE_PEEKSIGINFO_SHARED);
    }
}
