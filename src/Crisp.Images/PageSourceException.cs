namespace Crisp.Images;

/// <summary>Pages could not be delivered: image unreadable, connection lost, source gone.</summary>
public sealed class PageSourceException : Exception
{
    public PageSourceException(string message, Exception? inner = null) : base(message, inner) { }
}
