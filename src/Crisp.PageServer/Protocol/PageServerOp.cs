using System.Buffers.Binary;
using Crisp.Images;

namespace Crisp.PageServer.Protocol;

/// <summary>Command codes of the page-server protocol (the low 16 bits of <c>cmd</c>).</summary>
public enum PageServerOp : ushort
{
    /// <summary>Legacy: pages follow, flags implied PE_PRESENT.</summary>
    Add = 1,
    /// <summary>Legacy: a hole, flags implied PE_PARENT, no data.</summary>
    Hole = 2,
    /// <summary>Legacy open without reply.</summary>
    Open = 3,
    /// <summary>Open a pagemap for writing; the server answers one byte: has_parent.</summary>
    Open2 = 4,
    /// <summary>Does a parent image exist? The server answers a 32-bit int.</summary>
    Parent = 5,
    /// <summary>A pagemap entry with flags in the high 16 bits of cmd; data follows when PE_PRESENT.</summary>
    AddF = 6,
    /// <summary>Lazy fetch: answered with an ADD_F header and the page bytes.</summary>
    Get = 7,
    /// <summary>End of a session; the server answers a 32-bit status (0) once everything is stored.</summary>
    Close = 0x1023,
    /// <summary>Like Close, used by CRIU when the socket is shared and might stay open.</summary>
    ForceClose = 0x1024,
}
