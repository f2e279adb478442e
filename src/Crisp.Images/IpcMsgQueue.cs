using Crisp.Images.Proto;

namespace Crisp.Images;

/// <summary>A message queue and its messages, oldest first.</summary>
public sealed record IpcMsgQueue(IpcMsgEntry Entry)
{
    public List<(IpcMsg Msg, byte[] Data)> Messages { get; } = [];
}
