namespace Crisp.Images;

/// <summary>
/// Values of <c>task_core_entry.task_state</c>, as CRIU writes them: TASK_ALIVE 1; a zombie is
/// recorded as TASK_DEAD 2 (CRIU turns compel's TASK_ZOMBIE 6 into TASK_DEAD when it seizes the
/// tree); a job-control-stopped process as TASK_STOPPED 3. (crit 3.17 prints 3 as "Zombie" and
/// 6 as "Stopped": its labels, not the values CRIU dumps and restores.)
/// </summary>
public static class TaskStates
{
    public const uint Alive = 1;
    public const uint Zombie = 2;
    public const uint Stopped = 3;
}
