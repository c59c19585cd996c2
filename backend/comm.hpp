// The processes of a data-parallel run (docs/DISTRIBUTED.md): MPI where fbt was built with it
// and started by mpirun; otherwise this process alone, rank 0 of 1, where every collective is the
// identity. Sums add the ranks' values in rank order, ((x_0 + x_1) + x_2) + ..., so the same
// number of ranks gives the same bits run after run (MPI_Allreduce promises no order). On the
// GPU the gradients go through NCCL (an all-gather, then the same ordered sum in a kernel).
#pragma once
#include <cstddef>
#include <string>

#include "backend/device.hpp"

namespace fbt {

class Comm {
 public:
  // The world of this process: initializes MPI on first use when started by mpirun.
  static Comm& world();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }
  // The rank among the processes on this machine (which GPU a rank uses).
  int local_rank() const { return local_rank_; }

  // data (n values on device d) <- the sum over the ranks of each rank's data, in rank order.
  void sum_ordered(float* data, size_t n, Device d);
  void sum_ordered(double* data, size_t n);  // on the host (losses, counts)
  // Every rank's n values end to end in rank order, at rank 0 (`all`: n * size() values there,
  // unused elsewhere).
  void gather(const float* mine, size_t n, float* all);
  bool any(bool mine);             // whether it is true on any rank
  void broadcast(std::string& s);  // rank 0's value everywhere
  void barrier();
  // Ends every process of the run with this exit code (a rank's error must not leave the
  // others waiting in a collective).
  [[noreturn]] void abort(int code);

  // "MPI (Open MPI v4.1.4)" and "NCCL" where built in, or what is missing.
  static std::string describe();

 private:
  Comm();
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool mpi_ = false;  // started by a launcher: MPI is initialized
  bool nccl_decided_ = false;  // whether the ranks have settled on NCCL or the host sum
  bool nccl_ready_ = false;
};

// The elementwise sum of `count` blocks of n floats (block i at blocks + i*n), added in block
// order into out: the ordered sum every rank computes, and the one gradient accumulation matches.
void sum_blocks_in_order(float* out, const float* blocks, size_t count, size_t n);

}  // namespace fbt
