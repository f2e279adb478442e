using Crisp.Images.Pages;
using Crisp.LazyPages;

namespace Crisp.LazyPages.Tests;

/// <summary>The memory native/lazy_client.c maps and the plan that serves it: data with a hole of zero pages.</summary>
internal static class LazyClientLayout
{
    public const ulong Base = 0x600000000000UL;
    public const ulong Pages = 8192, HoleStart = 1000, HoleEnd = 1100;

    public static LazyPlan PlanFor(int pid) => new(pid,
        [new LazyVma(Base, Base + Pages * 4096)],
        [new PageRange(Base, HoleStart), new PageRange(Base + HoleEnd * 4096, Pages - HoleEnd)]);
}
