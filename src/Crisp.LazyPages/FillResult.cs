using Crisp.Native;

namespace Crisp.LazyPages;

public readonly record struct FillResult(FillStatus Status, long Bytes, int Errno);
