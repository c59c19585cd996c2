// NCCL for data-parallel training on GPUs (opened on first use, as cuBLAS is).
#ifdef FBT_HAVE_NCCL
#include <nccl.h>
#endif
#include <dlfcn.h>

#include <cstring>
#include <vector>

#include "backend/cuda/common.cuh"

namespace fbt::cuda {

using namespace detail;

#ifdef FBT_HAVE_NCCL
namespace {
// NCCL is opened on first use, as cuBLAS is: only data-parallel GPU runs map it.
struct Nccl {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) init_rank = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  std::string why;  // empty when usable
  ncclComm_t comm = nullptr;
  int size = 1;
  float* gathered = nullptr;  // size x n floats, grown as needed
  size_t gathered_n = 0;
};

Nccl& nccl() {
  static Nccl x = [] {
    Nccl n;
    void* lib = dlopen("libnccl.so." FBT_STR(NCCL_MAJOR), RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      n.why = std::string("cannot open NCCL: ") + dlerror();
      return n;
    }
    n.get_unique_id = reinterpret_cast<decltype(n.get_unique_id)>(dlsym(lib, "ncclGetUniqueId"));
    n.init_rank = reinterpret_cast<decltype(n.init_rank)>(dlsym(lib, "ncclCommInitRank"));
    n.all_gather = reinterpret_cast<decltype(n.all_gather)>(dlsym(lib, "ncclAllGather"));
    n.error_string = reinterpret_cast<decltype(n.error_string)>(dlsym(lib, "ncclGetErrorString"));
    if (!n.get_unique_id || !n.init_rank || !n.all_gather || !n.error_string) n.why = "NCCL lacks an entry point fbt needs";
    return n;
  }();
  return x;
}

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL ") + what + ": " + nccl().error_string(r));
}
}  // namespace

bool nccl_available(std::string* why) {
  if (why) *why = nccl().why;
  return nccl().why.empty();
}

void nccl_unique_id(char* id) {
  ncclUniqueId u;
  nccl_check(nccl().get_unique_id(&u), "ncclGetUniqueId");
  std::memcpy(id, u.internal, kNcclIdBytes);
}

void nccl_init(const char* id, int rank, int size) {
  ncclUniqueId u;
  std::memcpy(u.internal, id, kNcclIdBytes);
  Nccl& n = nccl();
  nccl_check(n.init_rank(&n.comm, size, u, rank), "ncclCommInitRank");
  n.size = size;
}

void nccl_sum_ordered(float* data, size_t count) {
  Nccl& n = nccl();
  if (!n.comm) throw std::logic_error("nccl_sum_ordered before nccl_init");
  if (n.gathered_n < count) {
    if (n.gathered) free(n.gathered);
    n.gathered = alloc(count * size_t(n.size));
    n.gathered_n = count;
  }
  nccl_check(n.all_gather(data, n.gathered, count, ncclFloat32, n.comm, /*stream=*/0), "ncclAllGather");
  sum_blocks_in_order(data, n.gathered, n.size, int64_t(count));
}
#else
bool nccl_available(std::string* why) {
  if (why) *why = "fbt was built without NCCL (nccl.h was not found when it was configured)";
  return false;
}
void nccl_unique_id(char*) { throw std::logic_error("fbt was built without NCCL"); }
void nccl_init(const char*, int, int) { throw std::logic_error("fbt was built without NCCL"); }
void nccl_sum_ordered(float*, size_t) { throw std::logic_error("fbt was built without NCCL"); }
#endif

}  // namespace fbt::cuda
