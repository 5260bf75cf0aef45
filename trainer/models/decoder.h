// trainer/models/decoder.h -- the RoPE decoder the llama-style families share: its modules, shaped
// by the family's DecoderShape and the config's knobs, and the config.json keys they all spell alike.
// Which keys a family reads, its names, tp plan and LoRA defaults stay in its own file (llama.cpp, ...).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/models/family.h"
#include "trainer/models/hf_config.h"

namespace lmforge::trainer {

// The decoder CausalLM of `family` (its DecoderShape) with c's sizes and knobs, uninitialised.
// Registered names are the HF tensor names of llama-style checkpoints ("model.layers.0.self_attn.q_proj").
CausalLM make_decoder(const ModelConfig& c, const Family& family);

// The sizes every decoder config.json spells alike: vocab_size, hidden_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, intermediate_size, max_position_embeddings,
// rms_norm_eps, tie_word_embeddings (default `tied`) and head_dim (default `head_dim`, or
// hidden / heads when 0), checked (GQA divides, RoPE's even dimensions). InputError naming the key.
void read_decoder_sizes(const HfConfigJson& j, ModelConfig& c, int64_t head_dim = 0, bool tied = false);
// v5's layer_types ("sliding_attention" | "full_attention", one per layer) into c.layer_types.
void read_layer_types(const HfConfigJson& j, ModelConfig& c);
// query_pre_attn_scalar, attn_logit_softcapping and final_logit_softcapping (null: none); each
// default is the family's config class's, used when the key is absent.
void read_attention_scaling(const HfConfigJson& j, ModelConfig& c, double query_scale, double attn_softcap,
                            double final_softcap);
// Keys whose math the family lacks: an InputError naming the first one given a value other than
// null or false (the values that change nothing).
void reject_keys(const HfConfigJson& j, const std::string& model_type, const std::vector<std::string>& keys);

// The written counterparts: sizes (with head_dim, RoPE keys and layer_types when set), and the
// attention scaling keys (query_pre_attn_scalar always, the caps as null when off).
void write_decoder_sizes(const ModelConfig& c, nlohmann::json& j);
void write_attention_scaling(const ModelConfig& c, nlohmann::json& j);

// The YAML checks every decoder family makes (RoPE's even head dimension); errors go to `s`.
void check_decoder_config(config::Section& s, const ModelConfig& c);

// The tp rule of the decoder's linears: q/k/v/gate/up (fused: qkv_proj in 3 blocks, gate_up_proj
// in 2) and the untied head split by columns, o/down by rows; q_norm and k_norm act per head.
TpRule decoder_tp_rule(const std::string& leaf);

}  // namespace lmforge::trainer
