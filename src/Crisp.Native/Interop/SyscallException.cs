using System.Runtime.InteropServices;

namespace Crisp.Native;

/// <summary>
/// A failed system call: names the call, the errno and what it acted on,
/// e.g. "ptrace(PTRACE_SEIZE, 4211): EPERM (Operation not permitted)".
/// </summary>
public sealed class SyscallException : Exception
{
    public string Call { get; }
    public int Errno { get; }
    public string Target { get; }

    public SyscallException(string call, int errno, string target)
        : base($"{call}({target}): {Native.Errno.Name(errno)} ({Native.Errno.Describe(errno)})")
    {
        Call = call;
        Errno = errno;
        Target = target;
    }

    public bool Is(int errno) => Errno == errno;
}
