using Crisp.Images;
using Crisp.Images.Proto;
using Crisp.Native;

namespace Crisp.Checkpoint.Restore;

/// <summary>
/// Named FIFOs. Opening a FIFO for one direction waits for the other (or fails with ENXIO when
/// non-blocking), so crisp first opens each FIFO O_RDWR itself, which is both a reader and a
/// writer and never waits, writes the bytes fifo-data.img holds for it, and keeps that fd until
/// every process has its files. Each task then opens the FIFO's path with its dumped flags like
/// a regular file, which returns at once. A deleted FIFO was made again as a ghost (RestoreGhosts.cs).
/// </summary>
internal sealed unsafe partial class RestoreSession
{

    private void PlaceFifo(RestoreTask t, FifoEntry fifo, int fd, bool cloexec)
    {
        if (!fifo.HasRegfId || !_c.Files.TryGetValue(fifo.RegfId, out var rf) || rf.Reg == null)
            throw new ImageException(_c.Dir.PathOf(ImageDir.FilesName), $"FIFO {fifo.Id}: no regular entry {fifo.RegfId} with its path");
        var reg = rf.Reg;
        if (!_c.FifoHolds.ContainsKey(fifo.PipeId))
        {
            string what = $"FIFO {reg.Name} (fd {fd} of {t})";
            int hold = Errno.Check(LibC.open(reg.Name, LibC.O_RDWR | LibC.O_NONBLOCK | LibC.O_CLOEXEC, 0), "open(O_RDWR)", what);
            _c.FifoHolds[fifo.PipeId] = hold;
            LibC.stat_t st;
            Errno.Check(LibC.fstat(hold, &st), "fstat", what);
            if ((st.st_mode & LibC.S_IFMT) != LibC.S_IFIFO)
                throw new CrispException($"{what}: the path is no longer a FIFO (mode 0{st.st_mode:o})");
            _c.FifoData ??= _c.Dir.ReadFifoData().ToDictionary(d => d.Entry.PipeId);
            if (_c.FifoData.TryGetValue(fifo.PipeId, out var d) && d.Data.Length > 0)
            {
                if (d.Entry.HasSize && d.Entry.Size > 65536 || d.Data.Length > 65536)
                    Errno.Check(LibC.fcntl(hold, LibC.F_SETPIPE_SZ, Math.Max(d.Data.Length, (int)d.Entry.Size)), "fcntl(F_SETPIPE_SZ)", what);
                fixed (byte* b = d.Data)
                    for (int done = 0; done < d.Data.Length;)
                        done += (int)Errno.Check(LibC.write(hold, b + done, (nuint)(d.Data.Length - done)), "write", what);
            }
        }
        PlaceRegular(t, reg, fd, cloexec);
    }

    private void CloseFifoHolds()
    {
        foreach (var fd in _c.FifoHolds.Values) LibC.close(fd);
        _c.FifoHolds.Clear();
    }
}
