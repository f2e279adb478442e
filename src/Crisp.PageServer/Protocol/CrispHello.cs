using System.Buffers.Binary;
using System.Globalization;

namespace Crisp.PageServer.Protocol;

/*
 * crisp's one extension of CRIU's page-server protocol: a hello that names the session.
 *
 * A lazy dump serves the memory of one frozen tree to one destination. With reconnection the
 * server accepts new connections for as long as the transfer lasts, so it must tell the
 * destination coming back from anybody else: another restore started from the same images (two
 * copies would run), or a daemon that was pointed at the wrong port. CRIU's protocol has no field
 * for it and CRIU's server closes the connection on any command it does not know, so the hello
 * is sent only to a server known to be crisp's lazy dump: that dump writes the session id into
 * its images directory (file `lazy-session`, one line of 16 hex digits), and a destination that
 * finds the file there says hello on every connection before its first GET:
 *
 *   client: page_server_iov { cmd = PS_CRISP_HELLO (0x4352), nr_pages = session id,
 *                             vaddr = client id (random, one per daemon), dst_id = version (1) }
 *   server: s32 status: 0 = go on; 1 = another session (not this dump); 2 = this tree's pages
 *           already went to another client; then it closes.
 *
 * The server binds the session to the first client that fetches a page; from then on only that
 * client id is served (its reconnections, and its second channel). A client without a hello
 * (CRIU's lazy-pages, which never reconnects) is served only while no crisp client is bound, and
 * binds the tree the same way. To a client that said hello, a GET that cannot be answered is
 * refused explicitly (ADD_F with nr_pages 0, as CRIU's server does for pages it cannot find),
 * instead of by closing, so the client knows not to ask again. This names, it does not
 * authenticate: the session id is as secret as the images; authentication is TLS's job.
 */

/// <summary>What a crisp client says before its first GET.</summary>
public readonly record struct CrispHello(ulong Session, ulong Client)
{
    public const PageServerOp Op = (PageServerOp)0x4352;
    public const ulong Version = 1;
    public const string FileName = "lazy-session";

    public const int Accepted = 0, OtherSession = 1, OtherClient = 2;

    public PageServerIov ToIov() => new((uint)Op, Session, Client, Version);

    public static CrispHello FromIov(PageServerIov iov) => new(iov.NrPages, iov.Vaddr);

    /// <summary>A new random id (never 0).</summary>
    public static ulong NewId()
    {
        ulong v;
        do v = BinaryPrimitives.ReadUInt64LittleEndian(Crisp.Native.KernelRandom.Bytes(8));
        while (v == 0);
        return v;
    }

    /// <summary>Writes a lazy dump's session id into its images directory.</summary>
    public static void WriteSession(string imagesDir, ulong session) =>
        File.WriteAllText(Path.Combine(imagesDir, FileName), session.ToString("x16", CultureInfo.InvariantCulture) + "\n");

    /// <summary>The session id a lazy dump left in the images directory, or null (not a crisp lazy dump).</summary>
    public static ulong? ReadSession(string imagesDir)
    {
        string path = Path.Combine(imagesDir, FileName);
        if (!File.Exists(path)) return null;
        string text = File.ReadAllText(path).Trim();
        if (text.Length != 16 || !ulong.TryParse(text, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out ulong id) || id == 0)
            throw new Images.ImageException(path, "not a session id (16 hex digits)");
        return id;
    }

    public static string Describe(int status) => status switch
    {
        OtherSession => "it serves another dump (the session id in the images does not match)",
        OtherClient => "it already serves this tree's pages to another destination",
        _ => $"status {status}",
    };
}
