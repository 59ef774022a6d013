// patchtcga's bridge to PyTorch's own distributed engine (c10d): a TCPStore rendezvous, a Gloo
// process group for CPU tensors and, where built with NCCL and asked for, an NCCL one for CUDA
// tensors (torch.distributed's "cpu:gloo,cuda:nccl"), with the collectives the training engine
// needs and a synchronised batch norm (an autograd function whose statistics and their gradients
// span every rank), behind a C interface.
// Every function catches C++ exceptions and returns them as a message (freed by the caller
// with ptcga_free_error); tensors are the at::Tensor objects tch passes as pointers.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;
  c10::intrusive_ptr<c10d::Backend> nccl;  // null unless CUDA tensors go through NCCL
  bool shut = false;

  // The backend for collectives over tensors like t: NCCL for CUDA tensors where the group has
  // it, Gloo otherwise (Gloo stages CUDA tensors through the host).
  c10d::Backend& on(const at::Tensor& t) const {
    open();
    return nccl && t.is_cuda() ? *nccl : *gloo;
  }
  c10d::Backend& cpu() const {
    open();
    return *gloo;
  }
  int size() const { return gloo->getSize(); }
  void open() const {
    if (shut) throw std::runtime_error("the process group was shut down");
  }

  // Ends the backends (NCCL's communicators and watchdog; nothing for Gloo), as
  // torch.distributed.destroy_process_group.
  void shutdown() {
    if (shut) return;
    shut = true;
    gloo->shutdown();
    if (nccl) nccl->shutdown();
  }

  ~Group() {
    try {
      shutdown();
    } catch (...) {
    }
  }
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
  } catch (const c10::Error& e) {
    *err = copy_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

// Every dimension but the channels (1): the ones batch norm reduces over.
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != 1) dims.push_back(d);
  return dims;
}

// (C) → (1, C, 1, …) to broadcast against x.
at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

// Batch norm over the batch of every rank, as torch.nn.SyncBatchNorm: forward gathers each
// rank's (mean, sum of squared deviations, count) and merges them (Chan's formula, no
// cancellation); backward all-reduces the two per-channel gradient sums, so every rank's input
// gradient is the one of the whole batch. Statistics in float32 whatever the input type.
struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& running_mean, const at::Tensor& running_var,
                            double momentum, double eps, int64_t group) {
    auto* g = reinterpret_cast<Group*>(group);
    const auto dims = reduced_dims(x);
    const int64_t c = x.size(1);
    auto xf = x.to(at::kFloat);
    auto mean_local = xf.mean(dims);
    auto m2_local = (xf - per_channel(mean_local, x)).square().sum(dims);
    auto packed = at::cat({mean_local, m2_local, at::full({1}, double(x.numel() / c), xf.options())});
    std::vector<at::Tensor> parts;
    for (int r = 0; r < g->size(); ++r) parts.push_back(at::empty_like(packed));
    std::vector<std::vector<at::Tensor>> outputs{parts};
    std::vector<at::Tensor> inputs{packed};
    g->on(packed).allgather(outputs, inputs)->wait();
    auto all = at::stack(outputs[0]);
    auto means = all.narrow(1, 0, c), m2s = all.narrow(1, c, c), counts = all.narrow(1, 2 * c, 1);
    const double count = counts.sum().item<double>();
    auto mean = (means * counts).sum(0) / count;
    auto m2 = (m2s + counts * (means - mean).square()).sum(0);
    auto invstd = (m2 / count + eps).rsqrt();
    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
    running_var.mul_(1 - momentum).add_((m2 / std::max(count - 1, 1.0)).to(running_var.scalar_type()), momentum);
    auto y = (xf - per_channel(mean, x)) * per_channel(invstd * weight.to(at::kFloat), x) +
             per_channel(bias.to(at::kFloat), x);
    ctx->save_for_backward({x, weight, mean, invstd});
    ctx->saved_data["group"] = group;
    ctx->saved_data["count"] = count;
    return y.to(x.scalar_type());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &mean = saved[2], &invstd = saved[3];
    auto* g = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    const double count = ctx->saved_data["count"].toDouble();
    const auto dims = reduced_dims(x);
    const int64_t c = x.size(1);
    auto dy = grads[0].to(at::kFloat);
    auto xmu = x.to(at::kFloat) - per_channel(mean, x);
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xmu = (dy * xmu).sum(dims);
    // This rank's share of the weight and bias gradients; the gradient all-reduce adds the others'.
    auto grad_weight = (sum_dy_xmu * invstd).to(weight.scalar_type());
    auto grad_bias = sum_dy.to(weight.scalar_type());
    std::vector<at::Tensor> both{at::cat({sum_dy, sum_dy_xmu})};
    g->on(both[0]).allreduce(both)->wait();
    auto mean_dy = both[0].narrow(0, 0, c) / count;
    auto mean_dy_xmu = both[0].narrow(0, c, c) / count;
    auto scale = invstd * weight.to(at::kFloat);
    auto dx = (dy - per_channel(mean_dy, x) - xmu * per_channel(invstd.square() * mean_dy_xmu, x)) *
              per_channel(scale, x);
    return {dx.to(x.scalar_type()), grad_weight, grad_bias, at::Tensor(), at::Tensor(),
            at::Tensor(),           at::Tensor(), at::Tensor()};
  }
};

// Gradient all-reduce overlapped with the backward pass, as DDP's reducer: the gradient buffers
// are cut into buckets; a hook after each parameter's gradient accumulation counts down its
// bucket, and buckets are all-reduced asynchronously as they fill, always in bucket order (the
// same on every rank, so collectives pair up). `finish` sends what did not fill (unused
// parameters) and waits for all.
struct Buckets {
  Group* group;
  std::vector<at::Tensor> buckets;
  std::vector<int> bucket_of;       // per parameter
  std::vector<int> size;            // parameters per bucket
  std::vector<int> pending;         // still to accumulate in this backward
  std::vector<bool> ready;
  std::vector<c10::intrusive_ptr<c10d::Work>> work;
  // The hooked accumulation nodes (kept alive) and each hook's key, removed on destruction.
  // (The node pointer's type differs across torch versions: shared_ptr up to 2.11, intrusive_ptr since.)
  using NodePtr = decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()));
  std::vector<std::pair<NodePtr, uintptr_t>> hooks;
  size_t next = 0;
  bool armed = false;
  std::mutex mutex;

  void launch_ready() {
    while (next < buckets.size() && ready[next]) {
      std::vector<at::Tensor> v{buckets[next]};
      work.push_back(group->on(v[0]).allreduce(v));
      ++next;
    }
  }

  void on_gradient(int param) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;
    int b = bucket_of[param];
    if (--pending[b] == 0) {
      ready[b] = true;
      launch_ready();
    }
  }

  ~Buckets() {
    for (auto& [node, key] : hooks) node->del_post_hook(key);
  }

  void finish() {
    std::lock_guard<std::mutex> lock(mutex);
    for (size_t b = next; b < buckets.size(); ++b) ready[b] = true;
    launch_ready();
    auto done = std::move(work);
    work.clear();
    next = 0;
    armed = false;
    pending = size;
    std::fill(ready.begin(), ready.end(), false);
    for (auto& w : done) w->wait();
  }
};

}  // namespace

extern "C" {

void ptcga_free_error(char* err) { std::free(err); }

int ptcga_has_nccl() {
#ifdef USE_C10D_NCCL
  return 1;
#else
  return 0;
#endif
}

// Rendezvous at host:port (rank 0 serves the store) and a Gloo group on the interface named by
// GLOO_SOCKET_IFNAME, as torch.distributed picks it, or else the one the host name resolves to;
// with cuda_device >= 0 also an NCCL group bound to that GPU (made this process's current one),
// which then carries every collective over CUDA tensors.
void* ptcga_group_new(const char* host, int port, int rank, int world, int timeout_s, int cuda_device, char** err) {
  Group* g = nullptr;
  guarded(err, [&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = rank == 0;
    so.numWorkers = world;
    so.waitWorkers = true;
    so.timeout = std::chrono::seconds(timeout_s);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    auto opts = c10d::ProcessGroupGloo::Options::create();
    opts->timeout = std::chrono::seconds(timeout_s);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    opts->devices.push_back(ifname != nullptr && *ifname != 0
                                ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    auto group = std::make_unique<Group>();
    group->store = store;
    group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", store),
                                                              rank, world, opts);
    if (cuda_device >= 0) {
#ifdef USE_C10D_NCCL
      const int visible = c10::cuda::device_count();
      if (cuda_device >= visible)
        throw std::runtime_error("NCCL on GPU " + std::to_string(cuda_device) + ": this process sees " +
                                 std::to_string(visible) + " GPU(s)");
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = std::chrono::seconds(timeout_s);
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("nccl", store),
                                                              rank, world, nccl_opts);
      nccl->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device)));
      group->nccl = nccl;
#else
      throw std::runtime_error(
          "this build has no NCCL (its LibTorch lacks CUDA, or CUDA's headers were missing when it was built); "
          "use dist_backend = \"gloo\"");
#endif
    }
    g = group.release();
  });
  return g;
}

int ptcga_group_shutdown(void* group, char** err) {
  return guarded(err, [&] { static_cast<Group*>(group)->shutdown(); });
}

void ptcga_group_free(void* group) { delete static_cast<Group*>(group); }

// Collectives write into tensors that may be leaves requiring grad (parameters at the start-up
// broadcast): outside autograd, as torch.distributed's are. Gloo copies CUDA tensors through
// the host with copy_, which autograd would otherwise refuse on such a leaf.
int ptcga_all_reduce_sum(void* group, at::Tensor* t, char** err) {
  return guarded(err, [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> v{*t};
    static_cast<Group*>(group)->on(*t).allreduce(v)->wait();
  });
}

int ptcga_broadcast(void* group, at::Tensor* t, int root, char** err) {
  return guarded(err, [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    static_cast<Group*>(group)->on(*t).broadcast(v, o)->wait();
  });
}

// Gathers every rank's `t` (same shape everywhere) into `out`, (world, …) in rank order.
int ptcga_all_gather(void* group, at::Tensor* out, at::Tensor* t, char** err) {
  return guarded(err, [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> parts = out->unbind(0);
    std::vector<std::vector<at::Tensor>> outputs{parts};
    std::vector<at::Tensor> inputs{*t};
    static_cast<Group*>(group)->on(*t).allgather(outputs, inputs)->wait();
  });
}

// Training-mode batch norm of x (N, C, …) with statistics over every rank's batch, updating
// the running statistics; weight and bias may be null (no affine transform: a constant 1 and 0,
// which autograd leaves alone). Returns a new tensor (owned by the caller) or null.
at::Tensor* ptcga_sync_batch_norm(void* group, at::Tensor* x, at::Tensor* weight, at::Tensor* bias,
                                  at::Tensor* running_mean, at::Tensor* running_var, double momentum, double eps,
                                  char** err) {
  at::Tensor* out = nullptr;
  guarded(err, [&] {
    auto options = x->options().dtype(at::kFloat);
    auto w = weight != nullptr ? *weight : at::ones({x->size(1)}, options);
    auto b = bias != nullptr ? *bias : at::zeros({x->size(1)}, options);
    auto y = SyncBatchNorm::apply(*x, w, b, *running_mean, *running_var, momentum, eps,
                                  reinterpret_cast<int64_t>(group));
    out = new at::Tensor(std::move(y));
  });
  return out;
}

// Buckets over `n_buckets` gradient views (contiguous, in the order they are all-reduced) and
// hooks on `n_params` parameters, parameter i feeding bucket bucket_of[i].
void* ptcga_buckets_new(void* group, at::Tensor** buckets, int n_buckets, at::Tensor** params,
                        const int* bucket_of, int n_params, char** err) {
  Buckets* out = nullptr;
  guarded(err, [&] {
    auto* b = new Buckets();
    b->group = static_cast<Group*>(group);
    for (int i = 0; i < n_buckets; ++i) b->buckets.push_back(*buckets[i]);
    b->size.assign(n_buckets, 0);
    b->ready.assign(n_buckets, false);
    for (int i = 0; i < n_params; ++i) {
      b->bucket_of.push_back(bucket_of[i]);
      b->size[bucket_of[i]] += 1;
    }
    b->pending = b->size;
    for (int i = 0; i < n_params; ++i) {
      auto acc = torch::autograd::impl::grad_accumulator(*params[i]);
      auto key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [b, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            b->on_gradient(i);
            return outputs;
          }));
      b->hooks.emplace_back(std::move(acc), key);
    }
    out = b;
  });
  return out;
}

// The next backward pass all-reduces buckets as they fill.
void ptcga_buckets_arm(void* buckets) {
  auto* b = static_cast<Buckets*>(buckets);
  std::lock_guard<std::mutex> lock(b->mutex);
  b->armed = true;
}

// Sends the buckets that did not fill and waits for every all-reduce of this pass.
int ptcga_buckets_finish(void* buckets, char** err) {
  return guarded(err, [&] {
    at::NoGradGuard no_grad;
    static_cast<Buckets*>(buckets)->finish();
  });
}

void ptcga_buckets_free(void* buckets) { delete static_cast<Buckets*>(buckets); }

// Through Gloo whatever the devices: a meeting of processes, not of GPU streams.
int ptcga_barrier(void* group, char** err) {
  return guarded(err, [&] { static_cast<Group*>(group)->cpu().barrier()->wait(); });
}

}  // extern "C"
