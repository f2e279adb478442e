using System.Runtime.InteropServices;
using System.Text;

namespace Crisp.Native;

public static unsafe partial class LibC
{
    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint readlink(string path, byte* buf, nuint size);

    /// <summary>readlink(2) that throws SyscallException; no length limit beyond 64 KiB.</summary>
    public static string ReadLink(string path)
    {
        int size = 4096;
        while (true)
        {
            var buf = new byte[size];
            fixed (byte* p = buf)
            {
                nint n = Errno.Check(readlink(path, p, (nuint)size), "readlink", path);
                if (n < size) return Encoding.UTF8.GetString(buf, 0, (int)n);
            }
            if (size >= 65536) throw new SyscallException("readlink", Errno.ENAMETOOLONG, path);
            size *= 4;
        }
    }
}
