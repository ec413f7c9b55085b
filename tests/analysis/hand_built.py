"""Hand-set models whose behaviour is known exactly, shared by the tests of the analyses built on them."""

from __future__ import annotations

import torch

from .conftest import hooked

V, N_CTX = 10, 10  # digits and the digits config's context
TOKEN, POSITION, MOVED = 0, V, V + N_CTX  # the residual stream's three blocks of one-hot dimensions


def previous_token_copier(sharpness: float = 20.0, silent_heads: int = 0):
    """One head that attends from each position to the one before and writes that token's logit; nothing else does.

    Residual dims: the token one-hot [0, V), the position one-hot [V, V + N_CTX), and the moved token
    [V + N_CTX, 2V + N_CTX), which only the head writes and only the unembedding reads: the logits are
    the previous token's one-hot (position 0, with no previous token, copies its own). `silent_heads`
    more heads read the tokens (uniform attention, W_V = I) but write nothing (W_O = 0).
    """
    d_model, d_head = 2 * V + N_CTX, N_CTX
    model = hooked(n_ctx=N_CTX, d_vocab=V, d_model=d_model, d_head=d_head, n_heads=1 + silent_heads)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.embed.W_E[:, TOKEN:POSITION] = torch.eye(V)
        model.pos_embed.W_pos[:, POSITION:MOVED] = torch.eye(N_CTX)
        attn = model.blocks[0].attn
        scale = (sharpness * attn.attn_scale) ** 0.5  # scores of `sharpness` after the 1/attn_scale
        attn.W_Q[0, POSITION:MOVED] = scale * torch.eye(N_CTX)  # query p -> u_p
        attn.W_K[0, POSITION:MOVED] = scale * torch.eye(N_CTX).roll(1, dims=1)  # key p' -> u_{p'+1}
        attn.W_V[0, TOKEN:POSITION] = torch.eye(V)  # token t -> u_t
        attn.W_O[0, :, MOVED:] = torch.eye(V)  # u_t -> the moved token t
        attn.W_V[1:, TOKEN:POSITION] = torch.eye(V)
        model.unembed.W_U[MOVED:] = 10 * torch.eye(V)
    return model
