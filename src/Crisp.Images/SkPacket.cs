using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>One packet (or, for a stream socket, a run of bytes) queued on a socket, as stored in sk-queues.img.</summary>
public sealed record SkPacket(SkPacketEntry Entry, byte[] Data);
