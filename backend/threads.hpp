// This process's CPU threads, shared fairly with other busy processes on the same cores.
//
// fbt's OpenMP threads spin while they wait between the many small parallel regions of a step
// (libgomp's default), which is what makes one process fast: a sleeping thread takes tens of
// microseconds to wake, and a time step has a few hundred of those waits. Beside another busy
// process on the same cores the spinning starves both (an evaluation beside a training run ran
// 40x slower). So the team adapts at share_cores(), called where work is cut into pieces (a
// training step, a window of the time loop): when the team's threads got much less CPU than
// the wall time (another process holds the cores), the process runs on one thread; when the
// kernel then reports enough idle cores for the whole team again, it returns to all of them.
// No kernel's result depends on the thread count (fixed-order sums), so this changes speed only.
#pragma once

namespace fbt::threads {

// The most threads the library runs (train.threads, --threads, fbt.set_num_threads; n >= 1), and
// the team size from now on. Without a call, OpenMP's default (OMP_NUM_THREADS or every core).
void set_max(int n);
int max_threads();
// Looks (at most every 50 ms, one clock read otherwise) at whether the team gets its cores and
// sizes it as above. Call it outside parallel regions, between pieces of work.
void share_cores();
// Whether share_cores() may shrink the team (default true; FBT_SHARE_CORES=0 turns it off).
void set_sharing(bool on);
// How many times share_cores() has shrunk the team so far (fbt bench reports it).
int shrinks();

}  // namespace fbt::threads
