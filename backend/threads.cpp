#include "backend/threads.hpp"

#include <omp.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace fbt::threads {

namespace {

using Clock = std::chrono::steady_clock;

// 50 ms between looks: long enough that a look costs nothing, short enough to react within a
// fraction of a second. A team that got less than kStarved of team x wall CPU seconds lost its
// cores; kFreeLooks looks in a row with room for the whole team bring it back.
constexpr double kInterval = 0.05, kStarved = 0.6;
constexpr int kFreeLooks = 4;

struct Sharing {
  int max = 0;   // 0: not yet read (OpenMP's default)
  int team = 0;  // the team size in use
  bool on = true;
  Clock::time_point since{};
  double cpu_since = 0;
  int free_looks = 0;
  int shrinks = 0;
};

Sharing& state() {
  static Sharing s = [] {
    Sharing t;
    const char* env = std::getenv("FBT_SHARE_CORES");
    t.on = !(env && std::strcmp(env, "0") == 0);
    return t;
  }();
  return s;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Tasks the kernel has runnable right now, over the whole machine (the fourth field of
// /proc/loadavg, "running/total"); -1 if unreadable.
int runnable_tasks() {
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return -1;
  double l1, l5, l15;
  int running = -1, total = 0;
  if (std::fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &running, &total) != 5) running = -1;
  std::fclose(f);
  return running;
}

void use(Sharing& s, int team) {
  s.team = team;
  omp_set_num_threads(team);
}

}  // namespace

void set_max(int n) {
  Sharing& s = state();
  s.max = n;
  use(s, n);
  s.since = Clock::now(), s.cpu_since = process_cpu_seconds(), s.free_looks = 0;
}

int max_threads() {
  Sharing& s = state();
  return s.max ? s.max : omp_get_max_threads();
}

void set_sharing(bool on) {
  Sharing& s = state();
  s.on = on;
  if (!on && s.max && s.team != s.max) use(s, s.max);
}

int shrinks() { return state().shrinks; }

void share_cores() {
  Sharing& s = state();
  if (!s.on || omp_in_parallel()) return;
  const Clock::time_point now = Clock::now();
  if (!s.max) {
    s.max = s.team = omp_get_max_threads();
    s.since = now, s.cpu_since = process_cpu_seconds();
    return;
  }
  const double wall = std::chrono::duration<double>(now - s.since).count();
  if (wall < kInterval || s.max < 2) return;
  const double cpu_now = process_cpu_seconds(), cpu = cpu_now - s.cpu_since;
  s.since = now, s.cpu_since = cpu_now;
  if (s.team > 1) {
    // A team that has its cores runs or spins on all of them: team x wall CPU seconds.
    if (cpu < kStarved * wall * s.team) use(s, 1), s.free_looks = 0, ++s.shrinks;
    return;
  }
  // On one thread: is there room for the whole team? (This thread is one of the runnable tasks.)
  const int others = runnable_tasks() - 1;
  if (others >= 0 && others + s.max <= omp_get_num_procs()) {
    if (++s.free_looks >= kFreeLooks) use(s, s.max);
  } else {
    s.free_looks = 0;
  }
}

}  // namespace fbt::threads
