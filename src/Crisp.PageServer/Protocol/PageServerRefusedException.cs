using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;

namespace Crisp.PageServer.Protocol;

/// <summary>The page server refused explicitly (crisp's hello refused, or a GET answered with 0 pages): asking again is useless.</summary>
public sealed class PageServerRefusedException : Exception
{
    public PageServerRefusedException(string message) : base(message) { }
}
