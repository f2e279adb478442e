using Crisp.Native;

namespace Crisp.LazyPages;

/// <summary>How one UFFDIO_COPY / ZEROPAGE / POISON went.</summary>
public enum FillStatus
{
    /// <summary>All of it (Bytes) went in.</summary>
    Ok,
    /// <summary>Only the first Bytes went in; retry the rest (the kernel reports this as EAGAIN with copy &gt; 0).</summary>
    Partial,
    /// <summary>EEXIST: the first page is already there (someone filled it). Nothing copied.</summary>
    Exists,
    /// <summary>EAGAIN: an event (fork/remap/remove/unmap) is pending on this uffd: read events, then retry.</summary>
    Again,
    /// <summary>ESRCH / ENOSPC: the process's mm is gone.</summary>
    Gone,
    /// <summary>ENOENT: no registered VMA covers the whole range (it may cross a VMA boundary).</summary>
    NoVma,
    /// <summary>Anything else; Errno says what.</summary>
    Failed,
}
