// State a restore must keep: 32 MiB of data whose hash is printed at start, a list that grows
// by one each tick, on a PeriodicTimer (thread pool, timers, the runtime's own threads).
using System.Security.Cryptography;

var data = new byte[32 << 20];
new Random(42).NextBytes(data);
string hash = Convert.ToHexString(SHA256.HashData(data));
var list = new List<long>();
Console.WriteLine($"ready {Environment.ProcessId} {hash}");
long n = 0;
using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(50));
while (await timer.WaitForNextTickAsync())
{
    n++;
    list.Add(n);
    if (n % 4 == 0)
        Console.WriteLine($"tick {n} {list.Count} {list.Sum()} {Convert.ToHexString(SHA256.HashData(data))}");
}
