namespace Crisp.Images;

/// <summary>
/// proto2's <c>required</c> fields, checked on the encoded bytes. CRIU and crit refuse a record
/// that lacks one, and so does crisp; but Google.Protobuf's own check (<c>IsInitialized()</c>)
/// walks reflection: on first use it builds every file descriptor and field accessor, 15–25 ms
/// of a restore that otherwise reads its images in a few, and the same again in a dump while
/// the process is frozen. This walker reads only tags: per message type, which field numbers
/// are required and which fields hold messages to descend into, from a table generated out of
/// the descriptors (RequiredFields.g.cs; a unit test regenerates and compares it).
/// </summary>
public static partial class RequiredFields
{
    /// <summary>One message type: its required fields (number, name) and its message-typed fields worth descending into.</summary>
    private sealed record Shape(int[] Required, string[] RequiredNames, (int Field, string Name, int Shape)[] Nested);

    private static readonly Dictionary<Type, int> ShapeIndex;

    // A static constructor runs after every part's field initializers: Types and Shapes (in the
    // generated part) are set by then.
    static RequiredFields()
    {
        ShapeIndex = new Dictionary<Type, int>(Types.Length);
        for (int i = 0; i < Types.Length; i++) ShapeIndex[Types[i]] = i;
    }

    /// <summary>
    /// The dotted path of the first required field missing from <paramref name="encoded"/>, a
    /// <typeparamref name="T"/> (e.g. <c>thread_info.gpregs.ax</c>), or null when every one is
    /// present. The bytes must already have parsed as a <typeparamref name="T"/>.
    /// </summary>
    public static string? FirstMissing<T>(ReadOnlySpan<byte> encoded) => FirstMissing(typeof(T), encoded);

    /// <inheritdoc cref="FirstMissing{T}"/>
    public static string? FirstMissing(Type type, ReadOnlySpan<byte> encoded)
    {
        if (!ShapeIndex.TryGetValue(type, out int shape))
            throw new ArgumentException($"{type.Name} is not one of crisp's image messages (RequiredFields.g.cs is stale?)", nameof(type));
        return Walk(Shapes[shape], encoded, 0);
    }

    private static string? Walk(Shape shape, ReadOnlySpan<byte> data, int depth)
    {
        if (depth > 100)
            return null; // the parser already refused deeper nesting; nothing legitimate gets here
        if (shape.Required.Length == 0 && shape.Nested.Length == 0)
            return null;
        Span<bool> seen = shape.Required.Length <= 64 ? stackalloc bool[shape.Required.Length] : new bool[shape.Required.Length];
        int at = 0;
        while (at < data.Length)
        {
            ulong tag = ReadVarint(data, ref at);
            int field = (int)(tag >> 3);
            switch ((int)(tag & 7))
            {
                case 0: ReadVarint(data, ref at); break;
                case 1: at += 8; break;
                case 5: at += 4; break;
                case 2:
                    int length = (int)ReadVarint(data, ref at);
                    if ((uint)length > (uint)(data.Length - at))
                        return null; // cannot happen after a successful parse
                    foreach (var nested in shape.Nested)
                        if (nested.Field == field)
                        {
                            if (Walk(Shapes[nested.Shape], data.Slice(at, length), depth + 1) is { } missing)
                                return nested.Name + "." + missing;
                            break;
                        }
                    at += length;
                    break;
                default:
                    return null; // groups: not in any CRIU proto, and the parser accepted the bytes
            }
            int r = Array.IndexOf(shape.Required, field);
            if (r >= 0) seen[r] = true;
        }
        for (int i = 0; i < seen.Length; i++)
            if (!seen[i]) return shape.RequiredNames[i];
        return null;
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> data, ref int at)
    {
        ulong value = 0;
        for (int shift = 0; shift < 70 && at < data.Length; shift += 7)
        {
            byte b = data[at++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return value;
        }
        return value;
    }
}
