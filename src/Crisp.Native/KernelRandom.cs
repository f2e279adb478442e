namespace Crisp.Native;

/// <summary>
/// Random bytes from the kernel's CSPRNG (getrandom(2), blocking until it is seeded). What
/// <c>RandomNumberGenerator</c> gives on Linux too, without loading and initialising OpenSSL
/// first: that costs a plaintext lazy-pages daemon 5-10 ms of its start-up, inside a migration's gap.
/// </summary>
public static unsafe class KernelRandom
{
    public static void Fill(Span<byte> dest)
    {
        fixed (byte* p = dest)
        {
            int done = 0;
            while (done < dest.Length)
            {
                long n = LibC.Syscall(LibC.SYS_getrandom, (long)(p + done), dest.Length - done, 0);
                if (n < 0)
                {
                    if (Errno.Last == Errno.EINTR) continue;
                    throw Errno.Failure("getrandom", $"{dest.Length - done} bytes");
                }
                done += (int)n;
            }
        }
    }

    public static byte[] Bytes(int count)
    {
        var b = new byte[count];
        Fill(b);
        return b;
    }
}
