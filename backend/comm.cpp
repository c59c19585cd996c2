#include "backend/comm.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include "backend/cuda/kernels.hpp"

#ifdef FBT_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only
#include <mpi.h>
#endif

namespace fbt {

namespace {

template <class T>
void sum_in_order(T* out, const T* blocks, size_t count, size_t n) {
  const int64_t len = int64_t(n);
#pragma omp parallel for if (len > (1 << 16))
  for (int64_t i = 0; i < len; ++i) {
    T s = blocks[i];
    for (size_t b = 1; b < count; ++b) s += blocks[b * n + size_t(i)];
    out[i] = s;
  }
}

// The processes a launcher started: mpirun's (Open MPI, or PMI/PMIx-based ones), or a Slurm
// step's; 0 when none did (started by hand). Then MPI itself says who is who.
int launched_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 1 || std::string(var).rfind("SLURM", 0) != 0) return std::max(n, 1);  // srun -n1: not a launch
    }
  return 0;
}

#ifdef FBT_HAVE_MPI
void mpi_check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string(what) + ": " + std::string(text, size_t(len)));
}

// The chunk of n values rank r sums: [offset, offset + count).
struct Chunk {
  size_t offset, count;
};
Chunk chunk_of(size_t n, int ranks, int r) {
  const size_t base = n / size_t(ranks), extra = n % size_t(ranks), rr = size_t(r);
  return {rr * base + std::min(rr, extra), base + (rr < extra ? 1 : 0)};
}
#endif

}  // namespace

void sum_blocks_in_order(float* out, const float* blocks, size_t count, size_t n) {
  sum_in_order(out, blocks, count, n);
}

Comm& Comm::world() {
  static Comm c;
  return c;
}

Comm::Comm() {
  const int launched = launched_size();
#ifdef FBT_HAVE_MPI
  if (launched == 0) return;
  mpi_ = true;
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready) {
    int provided = 0;  // OpenMP threads never call MPI: the main thread alone does
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    std::atexit([] {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (!finalized) MPI_Finalize();
    });
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_free(&local);
#else
  if (launched > 1)
    throw std::runtime_error("started as one of " + std::to_string(launched) +
                             " processes (mpirun), but this fbt was built without MPI: every process would train "
                             "alone; install libopenmpi-dev and rebuild (./run build)");
#endif
}

void Comm::sum_ordered(float* data, size_t n, Device d) {
  if (!mpi_ || n == 0) return;
  // On the GPU under mpirun, NCCL even for one process (mpirun -np 1 runs the NCCL path), but
  // only where every rank has it: one without it would wait in the host path's collectives while
  // the others wait in NCCL's. Decided once, by all ranks together.
  if (d != Device::CPU) {
    if (!nccl_decided_) {
      nccl_decided_ = true;
      if (!any(!cuda::nccl_available())) {
        std::string id(cuda::kNcclIdBytes, '\0');
        if (root()) cuda::nccl_unique_id(id.data());
        broadcast(id);
        cuda::nccl_init(id.data(), rank_, size_);
        nccl_ready_ = true;
      }
    }
    if (nccl_ready_) return cuda::nccl_sum_ordered(data, n);
    if (size_ == 1) return;
    std::vector<float> host(n);  // no NCCL: through the host
    copy_bytes(host.data(), Device::CPU, data, d, n * sizeof(float));
    sum_ordered(host.data(), n, Device::CPU);
    copy_bytes(data, d, host.data(), Device::CPU, n * sizeof(float));
    return;
  }
  if (size_ == 1) return;
#ifdef FBT_HAVE_MPI
  // Reduce-scatter by hand, then all-gather: rank r receives every rank's chunk r, adds them in
  // rank order, and every rank gathers the summed chunks (2n values sent per rank, as a ring's).
  const size_t ranks = static_cast<size_t>(size_);
  std::vector<int> send_counts(ranks), send_offsets(ranks), recv_counts(ranks), recv_offsets(ranks);
  const Chunk mine = chunk_of(n, size_, rank_);
  for (int r = 0; r < size_; ++r) {
    const Chunk c = chunk_of(n, size_, r);
    send_counts[size_t(r)] = int(c.count), send_offsets[size_t(r)] = int(c.offset);
    recv_counts[size_t(r)] = int(mine.count), recv_offsets[size_t(r)] = int(mine.count * size_t(r));
  }
  std::vector<float> pieces(mine.count * size_t(size_));
  mpi_check(MPI_Alltoallv(data, send_counts.data(), send_offsets.data(), MPI_FLOAT, pieces.data(), recv_counts.data(),
                          recv_offsets.data(), MPI_FLOAT, MPI_COMM_WORLD),
            "MPI_Alltoallv");
  std::vector<float> summed(mine.count);
  sum_blocks_in_order(summed.data(), pieces.data(), size_t(size_), mine.count);
  mpi_check(MPI_Allgatherv(summed.data(), int(mine.count), MPI_FLOAT, data, send_counts.data(), send_offsets.data(),
                           MPI_FLOAT, MPI_COMM_WORLD),
            "MPI_Allgatherv");
#endif
}

void Comm::sum_ordered(double* data, size_t n) {
  if (size_ == 1 || n == 0) return;
#ifdef FBT_HAVE_MPI
  std::vector<double> all(n * size_t(size_));
  mpi_check(MPI_Allgather(data, int(n), MPI_DOUBLE, all.data(), int(n), MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather");
  sum_in_order(data, all.data(), size_t(size_), n);
#endif
}

void Comm::gather(const float* mine, size_t n, float* all) {
  if (size_ == 1) {
    std::copy(mine, mine + n, all);
    return;
  }
#ifdef FBT_HAVE_MPI
  mpi_check(MPI_Gather(mine, int(n), MPI_FLOAT, all, int(n), MPI_FLOAT, 0, MPI_COMM_WORLD), "MPI_Gather");
#endif
}

bool Comm::any(bool mine) {
  if (size_ == 1) return mine;
  int in = mine, out = 0;
#ifdef FBT_HAVE_MPI
  mpi_check(MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD), "MPI_Allreduce");
#endif
  return out != 0;
}

void Comm::broadcast(std::string& s) {
  if (size_ == 1) return;
#ifdef FBT_HAVE_MPI
  long long len = (long long)s.size();
  mpi_check(MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD), "MPI_Bcast");
  s.resize(size_t(len));
  mpi_check(MPI_Bcast(s.data(), int(len), MPI_CHAR, 0, MPI_COMM_WORLD), "MPI_Bcast");
#endif
}

void Comm::barrier() {
#ifdef FBT_HAVE_MPI
  if (size_ > 1) mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void Comm::abort(int code) {
#ifdef FBT_HAVE_MPI
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

std::string Comm::describe() {
  std::string s;
#ifdef FBT_HAVE_MPI
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(version, &len);
  std::string v(version, size_t(len));
  s = "MPI (" + v.substr(0, v.find(',')) + ")";
#else
  s = "no MPI (libopenmpi-dev was not found when fbt was configured)";
#endif
  std::string why;
  s += cuda::nccl_available(&why) ? ", NCCL" : ", no NCCL (" + why + ")";
  return s;
}

}  // namespace fbt
