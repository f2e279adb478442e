using System.Buffers.Binary;
using System.Net;
using Crisp.Native;

namespace Crisp.Checkpoint.Sockets;

/// <summary>CRIU's --network-lock methods, numbered as inventory.img's network_lock_method.</summary>
public enum NetworkLockMethod
{
    Iptables = 0,
    Nftables = 1,
    Skip = 2,
}
