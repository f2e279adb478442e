namespace Crisp.Images;

/// <summary>
/// An image file is missing, truncated, corrupt or not what was asked for.
/// The message starts with the file it is about: "pagemap-42.img: record 3 at
/// offset 96 claims 4000000000 bytes, larger than the 16 left".
/// </summary>
public sealed class ImageException : Exception
{
    public ImageException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner)
    {
        ImagePath = path;
        Problem = problem;
    }

    /// <summary>The image file concerned.</summary>
    public string ImagePath { get; }

    /// <summary>What is wrong with it, without the file name.</summary>
    public string Problem { get; }
}
