namespace Crisp.Native;

/// <summary>
/// An operation crisp refuses or cannot complete, with a message meant for the user:
/// what was being done and why it failed ("fd 5 is a socket: sockets are not supported yet").
/// </summary>
public class CrispException : Exception
{
    public CrispException(string message, Exception? inner = null) : base(message, inner) { }
}
