using System.Text;
using Crisp.Native;
using Crisp.Native.ProcFs;

namespace Crisp.Inject;

/// <summary>
/// An anonymous area mapped inside the task for syscall arguments that are pointers
/// (paths, structs). Filled with process_vm_writev; a bump allocator hands out 16-byte
/// aligned slots. Dispose unmaps it (through the same injector, before that is disposed);
/// <see cref="Over"/> makes one over memory the task already has, left mapped.
/// </summary>
public sealed class ScratchArea : IDisposable
{
    private readonly int _pid;
    private readonly Action<ulong, ulong>? _unmap;
    private ulong _used;
    private bool _disposed;

    internal ScratchArea(RemoteSyscall sys, ulong address, ulong length) : this(sys.Task.Pid, address, length, sys.Munmap) { }

    private ScratchArea(int pid, ulong address, ulong length, Action<ulong, ulong>? unmap)
    {
        _pid = pid;
        _unmap = unmap;
        Address = address;
        Length = length;
    }

    /// <summary>
    /// A scratch area over memory the task already has (restore's control page): the same bump
    /// allocator, and Dispose leaves the memory mapped.
    /// </summary>
    public static ScratchArea Over(int pid, ulong address, ulong length) => new(pid, address, length, null);

    public ulong Address { get; }
    public ulong Length { get; }

    /// <summary>Copies <paramref name="data"/> into the next free slot and returns its remote address.</summary>
    public ulong Put(ReadOnlySpan<byte> data)
    {
        ulong at = Reserve(data.Length);
        RemoteMemory.Write(_pid, at, data);
        return at;
    }

    /// <summary>A NUL-terminated UTF-8 string.</summary>
    public ulong PutString(string s)
    {
        var b = new byte[Encoding.UTF8.GetByteCount(s) + 1];
        Encoding.UTF8.GetBytes(s, b);
        return Put(b);
    }

    public unsafe ulong PutStruct<T>(in T value) where T : unmanaged
    {
        fixed (T* p = &value) return Put(new ReadOnlySpan<byte>(p, sizeof(T)));
    }

    /// <summary>Reserves <paramref name="size"/> bytes (for syscall outputs) and returns their address.</summary>
    public ulong Reserve(int size)
    {
        ulong at = Address + _used;
        ulong next = (_used + (ulong)size + 15) & ~15UL;
        if (next > Length) throw new InvalidOperationException($"scratch area of {Length} bytes is full");
        _used = next;
        return at;
    }

    public void Read(ulong remote, Span<byte> dest) => RemoteMemory.Read(_pid, remote, dest);

    public unsafe T ReadStruct<T>(ulong remote) where T : unmanaged
    {
        T v;
        Read(remote, new Span<byte>(&v, sizeof(T)));
        return v;
    }

    /// <summary>Forgets all slots (the memory stays mapped).</summary>
    public void Reset() => _used = 0;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _unmap?.Invoke(Address, Length);
    }
}
