using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Crisp.Migration;
using Crisp.TestSupport;
using Xunit;

namespace Crisp.Integration.Tests.Migration;

/// <summary>
/// The agent writes what a peer sends, as root: names, sizes and counts are refused before
/// anything is allocated or written, and the agent goes on serving.
/// </summary>
public class AgentInputTests
{
    private static byte[] FileHeader(string name, ulong length)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var b = new byte[1 + 2 + n.Length + 8];
        b[0] = MigrationWire.File;
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(1), (ushort)n.Length);
        n.CopyTo(b, 3);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(3 + n.Length), length);
        return b;
    }

    /// <summary>Sends <paramref name="bytes"/> to a fresh agent and returns why it dropped the migration.</summary>
    private static string Refusal(TempDir dir, MigrationLimits limits, params byte[][] messages)
    {
        using var agent = new MigrationAgent(new MigrationAgentOptions
        {
            Listen = new IPEndPoint(IPAddress.Loopback, 0),
            BaseDir = dir.Path,
            PeerTimeout = TimeSpan.FromSeconds(20),
            Limits = limits,
        });
        string? why = null;
        agent.MigrationEnded += (_, error) => why = error ?? "succeeded";
        using var stop = new CancellationTokenSource();
        var run = new Thread(() => agent.Run(stop.Token)) { Name = "in-process agent" };
        run.Start();
        try
        {
            using var peer = new TcpClient();
            peer.Connect(agent.LocalEndPoint);
            var s = peer.GetStream();
            foreach (var m in messages) s.Write(m);
            Assert.True(Poll.Until(() => Volatile.Read(ref why) is not null, 20_000), "the agent did not end the migration");
        }
        finally
        {
            stop.Cancel();
            Assert.True(run.Join(TimeSpan.FromSeconds(20)), "the agent did not stop");
        }
        // Nothing of the refused migration is left on disk.
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path, "*"));
        return why!;
    }

    [Fact]
    public void A_file_larger_than_the_migration_may_store_is_refused_before_it_is_written()
    {
        using var dir = new TempDir();
        var why = Refusal(dir, new MigrationLimits { MaxTotalBytes = 1 << 20 },
            FileHeader("inventory.img", 4), [1, 2, 3, 4],
            FileHeader("pages-1.img", 1UL << 40));
        Assert.Contains("refusing pages-1.img: 1099511627776 bytes", why);
    }

    [Fact]
    public void A_name_with_a_path_is_refused()
    {
        using var dir = new TempDir();
        Assert.Contains("refusing image file name '../escape.img'", Refusal(dir, new MigrationLimits(), FileHeader("../escape.img", 0)));
        Assert.False(File.Exists(Path.Combine(Path.GetDirectoryName(dir.Path)!, "escape.img")));
    }

    [Fact]
    public void A_name_longer_than_the_limit_is_refused_before_it_is_read()
    {
        using var dir = new TempDir();
        Assert.Contains("refusing a string of 300 bytes", Refusal(dir, new MigrationLimits(), FileHeader(new string('a', 300), 0)));
    }

    [Fact]
    public void More_files_than_the_limit_are_refused()
    {
        using var dir = new TempDir();
        var why = Refusal(dir, new MigrationLimits { MaxFiles = 2 },
            FileHeader("a.img", 0), FileHeader("b.img", 0), FileHeader("c.img", 0));
        Assert.Contains("refusing more than 2 image files", why);
    }
}
