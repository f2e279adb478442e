using Crisp.Native;

namespace Crisp.Inject;

/// <summary>A signal that arrived while seizing (signal-delivery-stop) and must be given back on resume.</summary>
public readonly record struct HeldSignal(int Signo, SigInfo Info);
