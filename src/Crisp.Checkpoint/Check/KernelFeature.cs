using System.Runtime.InteropServices;
using Crisp.Native;

namespace Crisp.Checkpoint.Check;

/// <summary>One kernel facility crisp relies on, whether it is there, and what needs it.</summary>
public sealed record KernelFeature(string Name, bool Present, string Detail, string NeededBy, bool Required = true);
