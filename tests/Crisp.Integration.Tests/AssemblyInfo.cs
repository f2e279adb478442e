using Xunit;

// These tests freeze, kill and recreate real processes and some check "nothing was left
// behind" among this test process's children: run them one at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
