using System.Buffers.Binary;
using System.Net;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>One TCP connection as the lock sees it: addresses as CRIU's u32 words (network byte order in memory).</summary>
public sealed record TcpConnection(int Family, uint[] SrcAddr, uint SrcPort, uint[] DstAddr, uint DstPort)
{
    public override string ToString() =>
        $"{NetworkLock.Format(Family, SrcAddr)}:{SrcPort} → {NetworkLock.Format(Family, DstAddr)}:{DstPort}";
}
