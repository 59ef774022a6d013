// patchtcga's bridge to PyTorch's own distributed engine (c10d): a TCPStore rendezvous and a
// Gloo process group, with the collectives the training engine needs, behind a C interface.
// Every function catches C++ exceptions and returns them as a message (freed by the caller
// with ptcga_free_error); tensors are the at::Tensor objects tch passes as pointers.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) std::memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

template <typename F>
int guarded(char** err, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

}  // namespace

extern "C" {

void ptcga_free_error(char* err) { std::free(err); }

// Rendezvous at host:port (rank 0 serves the store) and a Gloo group on the interface named by
// GLOO_SOCKET_IFNAME, as torch.distributed picks it, or else the one the host name resolves to.
void* ptcga_group_new(const char* host, int port, int rank, int world, int timeout_s, char** err) {
  Group* g = nullptr;
  guarded(err, [&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = world;
    so.waitWorkers = true;
    so.timeout = std::chrono::seconds(timeout_s);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = std::chrono::seconds(timeout_s);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    opts->devices.push_back(ifname != nullptr && *ifname != 0
                                ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
    g = new Group{store, pg};
  });
  return g;
}

void ptcga_group_free(void* group) { delete static_cast<Group*>(group); }

int ptcga_all_reduce_sum(void* group, at::Tensor* t, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> v{*t};
    static_cast<Group*>(group)->pg->allreduce(v)->wait();
  });
}

int ptcga_broadcast(void* group, at::Tensor* t, int root, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    static_cast<Group*>(group)->pg->broadcast(v, o)->wait();
  });
}

// Gathers every rank's `t` (same shape everywhere) into `out`, (world, …) in rank order.
int ptcga_all_gather(void* group, at::Tensor* out, at::Tensor* t, char** err) {
  return guarded(err, [&] {
    std::vector<at::Tensor> parts = out->unbind(0);
    std::vector<std::vector<at::Tensor>> outputs{parts};
    std::vector<at::Tensor> inputs{*t};
    static_cast<Group*>(group)->pg->allgather(outputs, inputs)->wait();
  });
}

int ptcga_barrier(void* group, char** err) {
  return guarded(err, [&] { static_cast<Group*>(group)->pg->barrier()->wait(); });
}

}  // extern "C"
