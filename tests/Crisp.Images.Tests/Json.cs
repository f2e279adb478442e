using System.Text.Json;

namespace Crisp.Images.Tests;

internal static class Json
{
    /// <summary>crit shows some integers as "0x..." strings, some as numbers.</summary>
    public static ulong U64(this JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetUInt64(),
        JsonValueKind.String when e.GetString()!.StartsWith("0x") => Convert.ToUInt64(e.GetString()![2..], 16),
        JsonValueKind.String => ulong.Parse(e.GetString()!),
        _ => throw new FormatException($"not a number: {e}"),
    };

    public static JsonElement Entries(this JsonElement root) => root.GetProperty("entries");
    public static JsonElement At(this JsonElement e, string name) => e.GetProperty(name);
    public static ulong U64(this JsonElement e, string name) => e.GetProperty(name).U64();
    public static string Str(this JsonElement e, string name) => e.GetProperty(name).GetString()!;
}
