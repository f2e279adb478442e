using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>
/// The agent's half of <c>--move-address</c> (the order is in <see cref="MovedAddress"/>): the
/// addresses a source asked for go on <c>--move-address-dev</c> before the restore, come off again
/// if it fails, and are announced once the restored tree runs. Without a device the agent moves
/// no address: a source asking for one is refused before anything is restored.
/// </summary>
internal sealed class AgentAddresses(string? device)
{
    /// <summary>At most this many per migration.</summary>
    public const int Max = 16;

    private readonly List<MovedAddress> _wanted = [];
    private readonly List<MovedAddress> _added = [];

    /// <summary>One 'A' message: refused (IOException) if this agent moves no address, or the text is no ADDR/PREFIX.</summary>
    public void Want(string text)
    {
        if (device is null)
            throw new IOException($"the source wants {text} moved here, but this agent moves no address (start it with --move-address-dev DEV)");
        if (_wanted.Count == Max) throw new IOException($"refusing more than {Max} addresses to move");
        try { _wanted.Add(MovedAddress.Parse(text)); }
        catch (FormatException e) { throw new IOException($"refusing the address to move: {e.Message}"); }
    }

    public bool Any => _wanted.Count > 0;

    /// <summary>Adds every address before the restore: all or none.</summary>
    public void Add()
    {
        if (!Any) return;
        if (!MovedAddress.DeviceExists(device!))
            throw new CrispException($"--move-address-dev {device}: no such device in the agent's network namespace");
        foreach (var m in _wanted)
        {
            try { m.Add(device!); }
            catch
            {
                Remove();
                throw;
            }
            _added.Add(m);
            Log.I($"agent: {m} added to {device}");
        }
    }

    /// <summary>The restore failed: what was added goes (before the source is told, so that it can take the address back). Errors are logged.</summary>
    public void Remove()
    {
        foreach (var m in _added)
        {
            try { m.Delete(device!); }
            catch (CrispException e) { Log.E($"agent: could not delete {m} from {device}: {e.Message}"); }
        }
        _added.Clear();
    }

    /// <summary>The restored tree runs: the link learns where the addresses are now.</summary>
    public void Announce()
    {
        foreach (var m in _added) m.Announce(device!);
    }
}
