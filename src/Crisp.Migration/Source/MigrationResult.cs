using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Crisp.Checkpoint.Dump;
using Crisp.Native;

namespace Crisp.Migration;

/// <summary>The end of a migration: its statistics, and whether the source was resumed here (nothing moved).</summary>
public sealed record MigrationResult(MigrationStats Stats, bool Resumed);
