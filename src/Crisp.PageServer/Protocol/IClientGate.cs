using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;

namespace Crisp.PageServer.Protocol;

/// <summary>
/// Who may fetch pages from a page server (a lazy dump binds its tree to one destination). Called
/// on a hello (<paramref name="fetching"/> false) and before a connection's first GET (true), with
/// the connection's hello or null if it sent none. Returns a CrispHello status: 0 to serve.
/// </summary>
public interface IClientGate
{
    int Admit(CrispHello? hello, bool fetching);
}
