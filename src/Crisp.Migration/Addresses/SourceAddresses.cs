using System.Net;
using Crisp.Native;

namespace Crisp.Migration.Addresses;

/// <summary>
/// The source's half of <c>--move-address</c> (the order is in <see cref="MovedAddress"/>): found
/// before the freeze, deleted with the tree frozen, given back if the tree resumes here.
/// </summary>
public sealed class SourceAddresses
{
    private readonly List<(MovedAddress Moved, string Device)> _all = [];
    private readonly List<(MovedAddress Moved, string Device)> _taken = [];

    /// <summary>Finds every address; refuses one that is not here, or the one the agent is reached from (the page server listens there).</summary>
    public SourceAddresses(IEnumerable<IPAddress> addresses, IPAddress controlLocal)
    {
        foreach (var a in addresses.Distinct())
        {
            if (a.Equals(controlLocal) || (controlLocal.IsIPv4MappedToIPv6 && a.Equals(controlLocal.MapToIPv4())))
                throw new CrispException($"--move-address {a}: this is the address the agent is reached from (and the pages are served on); reach the agent from another address");
            _all.Add(MovedAddress.Find(a));
        }
    }

    public IReadOnlyList<MovedAddress> Moved => _all.Select(x => x.Moved).ToList();
    public bool Any => _all.Count > 0;

    /// <summary>Deletes every address (frozen, locked): all or none, an error puts back what went.</summary>
    public void TakeAway()
    {
        foreach (var (m, dev) in _all)
        {
            try { m.Delete(dev); }
            catch
            {
                GiveBack();
                throw;
            }
            _taken.Add((m, dev));
            Log.I($"migrate: {m} deleted from {dev}");
        }
    }

    /// <summary>The tree resumes here: the addresses come back first, announced (the agent may have announced them). Errors are logged: it runs on failure paths.</summary>
    public void GiveBack()
    {
        foreach (var (m, dev) in _taken)
        {
            try
            {
                m.Add(dev);
                m.Announce(dev);
                Log.I($"migrate: {m} is back on {dev}");
            }
            catch (CrispException e) { Log.E($"migrate: could not give {m} back to {dev}: {e.Message}"); }
        }
        _taken.Clear();
    }
}
