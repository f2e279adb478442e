using System.Net;

namespace Crisp.PageServer.Server;

public sealed record PageServerSessionResult(
    int SessionId,
    EndPoint? Remote,
    SessionOutcome Outcome,
    Exception? Error,
    long BytesReceived,
    long BytesSent,
    long GetRequests,
    bool ForceClose);
