using Crisp.Images.Pages;
using Crisp.Images.Proto;
using Google.Protobuf;

namespace Crisp.Images;

/// <summary>One established TCP connection: its tcp_stream_entry and the bytes of its queues.</summary>
public sealed record TcpStream(TcpStreamEntry Entry, byte[] RecvQueue, byte[] SendQueue);
