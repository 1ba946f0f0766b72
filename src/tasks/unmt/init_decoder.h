// XLM's initialization of a translation model from its masked language modelling pretraining:
// the pretraining run (translation.mlm) trains the shared embeddings and the encoder, and the
// decoder starts as a copy of the encoder; only its cross-attention starts fresh.
//   foldtron unmt init-decoder --load MLM_CKPT --output DIR
// writes DIR/iter_0000000: the pretrained model with the copy, no optimizer state, step 0; a
// translation run starts from it with checkpoint.load: DIR (in any layout).
#pragma once

#include <cstdint>
#include <string>

namespace foldtron {

class Model;
class ProcessGroups;

// Copies every decoder tensor (parameter or buffer) "decoder.X" from the encoder's "encoder.X" of
// the same shape: the embeddings' positions, languages and norm, and each layer's
// self-attention, feed-forward block and norms (decoder layer i from encoder layer i). The
// decoder's cross-attention and its norm, and decoder layers past the encoder's count, keep
// their initialization. Returns the tensors copied; InternalError when the model is not an
// encoder-decoder or is split over pipeline stages (a twin could be on another stage).
int64_t copy_encoder_to_decoder(Model& model);

// The command: loads the checkpoint `load` (CheckpointError when there is none, or it is not an
// encoder-decoder's) into a model on the host, copies, writes `output`. `groups`: a layout where
// every rank holds the whole model (tp = pp = ep = 1). Returns the tensors copied. Collective.
int64_t init_decoder_checkpoint(const std::string& load, const std::string& output, ProcessGroups& groups);

}  // namespace foldtron
