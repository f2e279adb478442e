using System.Buffers.Binary;

namespace Crisp.Native;

/// <summary>What kind of terminal a character device number is (linux/major.h).</summary>
public enum TtyKind { None, PtyMaster, PtySlave, CurrentTty, Console, VirtualConsole, Serial }
