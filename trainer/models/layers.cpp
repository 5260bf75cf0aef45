// trainer/models/layers.cpp -- the replaceable layers, layer hosts and the small parts every
// family shares (linear, head, activation, RMSNorm). No family's structure here.
#include "trainer/models/layers.h"

namespace lmforge::trainer {

namespace F = torch::nn::functional;

DenseLinearImpl::DenseLinearImpl(int64_t in_features, int64_t out_features, bool has_bias) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinearImpl::forward(const torch::Tensor& x) { return F::linear(x, weight, bias); }

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab_size, int64_t dim) {
  weight = register_parameter("weight", torch::empty({vocab_size, dim}));
}

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& ids) { return F::embedding(ids, weight); }

torch::Tensor TiedHeadImpl::forward(const torch::Tensor& h) { return F::linear(h, weight); }

void LayerHost::add_layer(const std::string& name, Layer layer, Layer& member) {
  member = register_module(name, std::move(layer));
  members_[name] = &member;
}

void LayerHost::replace(const std::string& name, Layer layer) {
  auto it = members_.find(name);
  if (it == members_.end()) throw std::invalid_argument("no replaceable layer named " + name);
  *it->second = replace_module(name, std::move(layer));
}

std::vector<std::pair<std::string, Layer>> named_layers(torch::nn::Module& root) {
  std::vector<std::pair<std::string, Layer>> out;
  for (const auto& item : root.named_modules()) {
    if (auto layer = std::dynamic_pointer_cast<LayerImpl>(item.value())) out.emplace_back(item.key(), layer);
  }
  return out;
}

void replace_layer(torch::nn::Module& root, const std::string& path, Layer layer) {
  auto dot = path.rfind('.');
  std::string parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
  std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
  std::shared_ptr<torch::nn::Module> parent;
  if (parent_path.empty()) {
    if (auto* host = dynamic_cast<LayerHost*>(&root)) return host->replace(name, std::move(layer));
  } else {
    for (const auto& item : root.named_modules()) {
      if (item.key() == parent_path) parent = item.value();
    }
  }
  auto host = std::dynamic_pointer_cast<LayerHost>(parent);
  if (!host) throw std::invalid_argument("no replaceable layer named " + path);
  host->replace(name, std::move(layer));
}

int64_t embedding_rows(torch::nn::Module& root) {
  for (const auto& [name, layer] : named_layers(root))
    if (layer->is_embedding()) return layer->named_parameters(false)["weight"].size(0);
  return -1;
}

Layer make_linear(int64_t in, int64_t out, bool bias) { return std::make_shared<DenseLinearImpl>(in, out, bias); }

Layer make_head(int64_t hidden, int64_t vocab, bool tied, const Layer& embedding) {
  if (tied) return std::make_shared<TiedHeadImpl>(embedding->named_parameters(false)["weight"]);
  return make_linear(hidden, vocab, false);
}

torch::Tensor activate(const std::string& name, const torch::Tensor& x) {
  if (name == "relu") return torch::relu(x);
  if (name == "gelu") return torch::gelu(x);
  if (name == "silu") return F::silu(x);
  return torch::gelu(x, "tanh");  // GPT-2's "gelu_new" is the tanh approximation
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, bool plus_one) : eps(eps), plus_one(plus_one) {
  weight = register_parameter("weight", plus_one ? torch::zeros({dim}) : torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  auto xf = x.to(torch::kFloat);
  auto normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  if (plus_one) return (normed * (1 + weight.to(torch::kFloat))).to(x.dtype());
  return weight * normed.to(x.dtype());
}

}  // namespace lmforge::trainer
