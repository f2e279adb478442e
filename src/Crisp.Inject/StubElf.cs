using System.Buffers.Binary;
using Crisp.Native;

namespace Crisp.Inject;

/// <summary>
/// The restore stub: a minimal static x86-64 ELF, one PT_LOAD (R+X) holding the ELF header,
/// one program header and
/// <code>
///   loop: mov eax, 34   ; pause
///         syscall
///         jmp loop
/// </code>
/// No libc, no interpreter: its address space is its text page, [vvar]/[vvar_vclock]/[vdso],
/// [stack] and [vsyscall]. It sits in pause() until seized and morphed.
/// </summary>
public static class StubElf
{
    /// <summary>Default load address: 16 TiB, far from PIE (0x55..), non-PIE (0x400000) and mmap (0x7f..) areas.</summary>
    public const ulong DefaultLoadAddress = 0x1000_0000_0000;
    private const int EhdrSize = 64, PhdrSize = 56;
    /// <summary>File offset (and offset from the load address) of the entry point.</summary>
    public const int EntryOffset = EhdrSize + PhdrSize;
    /// <summary>Offset of the <c>syscall</c> instruction (0f 05) from the load address: usable for injection without patching.</summary>
    public const int SyscallOffset = EntryOffset + 5;

    private static readonly byte[] Code =
    [
        0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, 34 (SYS_pause)
        0x0f, 0x05,                   // syscall
        0xeb, 0xf7,                   // jmp -9 (back to mov)
    ];

    /// <summary>Builds the ELF image (129 bytes) loaded at <paramref name="loadAddress"/> (page aligned).</summary>
    public static byte[] Build(ulong loadAddress = DefaultLoadAddress)
    {
        if ((loadAddress & (LibC.PageSize - 1)) != 0) throw new ArgumentException("load address must be page aligned");
        var b = new byte[EntryOffset + Code.Length];
        var s = b.AsSpan();
        // e_ident: magic, ELFCLASS64, little endian, version 1, System V ABI.
        s[0] = 0x7f; s[1] = (byte)'E'; s[2] = (byte)'L'; s[3] = (byte)'F';
        s[4] = 2; s[5] = 1; s[6] = 1; s[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(s[16..], 2);       // e_type ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(s[18..], 62);      // e_machine EM_X86_64
        BinaryPrimitives.WriteUInt32LittleEndian(s[20..], 1);       // e_version
        BinaryPrimitives.WriteUInt64LittleEndian(s[24..], loadAddress + EntryOffset); // e_entry
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], EhdrSize); // e_phoff
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], 0);       // e_shoff
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], 0);       // e_flags
        BinaryPrimitives.WriteUInt16LittleEndian(s[52..], EhdrSize); // e_ehsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[54..], PhdrSize); // e_phentsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[56..], 1);       // e_phnum
        BinaryPrimitives.WriteUInt16LittleEndian(s[58..], 64);      // e_shentsize
        BinaryPrimitives.WriteUInt16LittleEndian(s[60..], 0);       // e_shnum
        BinaryPrimitives.WriteUInt16LittleEndian(s[62..], 0);       // e_shstrndx
        var ph = s[EhdrSize..];
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1);            // p_type PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 5);       // p_flags PF_R | PF_X
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], 0);       // p_offset
        BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], loadAddress); // p_vaddr
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], loadAddress); // p_paddr
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)b.Length); // p_filesz
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], (ulong)b.Length); // p_memsz
        BinaryPrimitives.WriteUInt64LittleEndian(ph[48..], LibC.PageSize);   // p_align
        Code.CopyTo(s[EntryOffset..]);
        return b;
    }

    /// <summary>
    /// Writes the stub into a memfd and starts it with posix_spawn("/proc/self/fd/N"): stdio from
    /// /dev/null unless given, every other fd closed except <paramref name="extraFds"/>, empty
    /// environment. Returns the pid; the caller owns it (waitpid / kill it).
    ///
    /// By default the memfd is CLOEXEC and kept open under its own number until the exec, which
    /// then closes it: the stub has only its stdio and the extra fds. That number may be one of
    /// the extra fds' targets; a caller that places fds freely (restore) gives
    /// <paramref name="execFd"/> instead: the memfd goes to the child as an ordinary fd of that
    /// number and is exec'ed from there (a CLOEXEC memfd, or one closed by a file action, would be
    /// gone before the exec: ENOENT), and the stub keeps it open.
    /// </summary>
    public static unsafe int Start(ulong loadAddress = DefaultLoadAddress, bool newSession = false,
        IReadOnlyList<(int Fd, int ChildFd)>? extraFds = null, StdioSource? stdin = null, StdioSource? stdout = null,
        StdioSource? stderr = null, int execFd = -1)
    {
        var elf = Build(loadAddress);
        const uint MFD_CLOEXEC = 1;
        int fd = Errno.Check(LibC.memfd_create("crisp-stub", execFd >= 0 ? 0 : MFD_CLOEXEC), "memfd_create", "crisp-stub");
        try
        {
            fixed (byte* p = elf)
                if (Errno.Check(LibC.write(fd, p, (nuint)elf.Length), "write", "stub memfd") != elf.Length)
                    throw new SyscallException("write", Errno.EIO, "stub memfd: short write");
            extraFds ??= [];
            return ProcessSpawner.Spawn(new SpawnOptions
            {
                Path = $"/proc/self/fd/{(execFd >= 0 ? execFd : fd)}",
                Argv = ["crisp-stub"],
                Envp = [],
                Stdin = stdin ?? StdioSource.DevNull(false),
                Stdout = stdout ?? StdioSource.DevNull(true),
                Stderr = stderr ?? StdioSource.DevNull(true),
                ExtraFds = execFd >= 0 ? [.. extraFds, (fd, execFd)] : extraFds,
                KeepOpenFds = execFd >= 0 ? [] : [fd], // CLOEXEC: gone once the exec has opened it
                NewSession = newSession,
            });
        }
        finally
        {
            LibC.close(fd);
        }
    }
}
