using System.Net;
using System.Net.Sockets;

namespace Crisp.PageServer;

/// <summary>Turns the command line's --address/--port into endpoints.</summary>
public static class PageServerAddress
{
    /// <summary>
    /// A listening endpoint from an IPv4 or IPv6 literal ("0.0.0.0", "127.0.0.1", "::", "::1",
    /// "[::1]"); null or empty means every address (IPv6 any, dual-stack, like CRIU's default).
    /// </summary>
    public static IPEndPoint ParseListen(string? address, int port)
    {
        CheckPort(port, allowZero: true);
        if (string.IsNullOrEmpty(address))
            return new IPEndPoint(Socket.OSSupportsIPv6 ? IPAddress.IPv6Any : IPAddress.Any, port);
        return new IPEndPoint(ParseLiteral(address), port);
    }

    /// <summary>A server endpoint from a literal or a host name (resolved, IPv4 preferred like getaddrinfo's usual order).</summary>
    public static IPEndPoint Resolve(string address, int port)
    {
        CheckPort(port, allowZero: false);
        string trimmed = address.Trim('[', ']');
        if (IPAddress.TryParse(trimmed, out var ip))
            return new IPEndPoint(ip, port);
        var all = Dns.GetHostAddresses(address);
        var pick = all.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? all.FirstOrDefault()
            ?? throw new ArgumentException($"{address} has no address");
        return new IPEndPoint(pick, port);
    }

    private static IPAddress ParseLiteral(string address) =>
        IPAddress.TryParse(address.Trim('[', ']'), out var ip)
            ? ip
            : throw new ArgumentException($"'{address}' is not an IPv4 or IPv6 address literal");

    private static void CheckPort(int port, bool allowZero)
    {
        if (port < (allowZero ? 0 : 1) || port > 65535)
            throw new ArgumentOutOfRangeException(nameof(port), port, "not a TCP port");
    }
}
