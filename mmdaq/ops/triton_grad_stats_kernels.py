"""Triton kernels of the DAQ backward's G_Y pass (launched by :mod:`.triton_grad_stats`).

G_Y is addressed as ``[outer, C, inner]`` (``C`` output channels): element ``(o, c, i)`` lies at
``(o * C + c) * inner + i``, and ``j = o * inner + i`` numbers the ``M = outer * inner`` values
of a channel. A channels-last G_Y (or a 2-D ``[M, C]`` one) is the case ``inner == 1``
(``CHANNELS_INNER``: tiles are then read along the channels, the contiguous axis). Three
launches, each a grid over channel blocks and splits of the ``M`` values:

1. :func:`_grad_partials_kernel`: partial statistics of each (channel, split): the abs-max (as
   the bits of ``|g|``, whose integer max is NaN over Inf over any finite value, as
   ``amax``), the sum of squares and the plain sum in float64, the exact zeros.
2. :func:`_grad_histogram_kernel`: every program adds up its channels' partials (abs-max,
   sigma), adds its split to the channel's histogram of ``x = |g| * (1 / max)`` (count and
   float64 sum of ``x`` per bin, atomically) and counts ``x > sigma``. The last program of a
   channel block (an atomic counter) computes the objective's clip, the scales, and resets the
   histogram and counter; the last channel block turns the tensor abs-max into ``s_x``.
3. :func:`_grad_codes_kernel`: both int8 copies of G_Y from one read, written channels last.

The workspace (histograms, counters, the abs-max cell) is zero between calls: every kernel
that adds into it is followed, in the same launch, by the program that resets it.
"""
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None

if triton is not None:
    # Rows of the float32 ``stats`` output [5 * C + 1]: five [C] rows, then s_x.
    G_MAX = tl.constexpr(0)
    FRAC = tl.constexpr(1)
    CLIP = tl.constexpr(2)
    SCALE_W = tl.constexpr(3)
    GRAD_BIAS = tl.constexpr(4)

    @triton.jit
    def _tile(c, j, C, inner, CHANNELS_INNER: tl.constexpr):
        # int64 [BLOCK_C, BLOCK_J] offsets of the values j of channels c in [outer, C, inner].
        if CHANNELS_INNER:
            return j[None, :].to(tl.int64) * C + c[:, None]
        o = j // inner
        i = j - o * inner
        return (o.to(tl.int64) * C * inner)[None, :] + (c.to(tl.int64) * inner)[:, None] \
            + i[None, :]

    @triton.jit(do_not_specialize=['M', 'per_split', 'splits'])
    def _grad_partials_kernel(g_ptr, part_ptr, C, inner, M, per_split, splits,
                              CHANNELS_INNER: tl.constexpr, BLOCK_C: tl.constexpr,
                              BLOCK_J: tl.constexpr):
        # g: float32 [outer, C, inner]; part: float64 [4, C, splits] = abs-max bits, sum of
        # g**2, exact zeros, sum of g of each (channel, split).
        c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        split = tl.program_id(1)
        c_ok = c < C
        j_begin = split * per_split
        j_end = tl.minimum(j_begin + per_split, M)
        max_bits = tl.zeros((BLOCK_C, BLOCK_J), tl.int32)
        sq = tl.zeros((BLOCK_C, BLOCK_J), tl.float64)
        total = tl.zeros((BLOCK_C, BLOCK_J), tl.float64)
        zeros = tl.zeros((BLOCK_C, BLOCK_J), tl.int32)
        for j0 in range(j_begin, j_end, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            ok = c_ok[:, None] & (j < j_end)[None, :]
            v = tl.load(g_ptr + _tile(c, j, C, inner, CHANNELS_INNER), mask=ok, other=0.0)
            max_bits = tl.maximum(max_bits, tl.abs(v).to(tl.int32, bitcast=True))
            v64 = v.to(tl.float64)
            sq += v64 * v64  # in float64: g**2 overflows float32 past 1.8e19
            total += v64
            zeros += ((v == 0.0) & ok).to(tl.int32)
        row = c.to(tl.int64) * splits + split
        cs = C * splits
        tl.store(part_ptr + row, tl.max(max_bits, axis=1).to(tl.float64), mask=c_ok)
        tl.store(part_ptr + cs + row, tl.sum(sq, axis=1), mask=c_ok)
        tl.store(part_ptr + 2 * cs + row, tl.sum(zeros, axis=1).to(tl.float64), mask=c_ok)
        tl.store(part_ptr + 3 * cs + row, tl.sum(total, axis=1), mask=c_ok)

    @triton.jit
    def _finite(v):
        return (v == v) & (tl.abs(v) < float('inf'))

    @triton.jit
    def _scale_from_clip(clip, data_finite, Q: tl.constexpr):
        # clip / Q with the non-finite policy of quantize._scale_from_clip (csrc clip_to_step).
        valid = data_finite & (tl.abs(clip) < float('inf')) & (clip >= 0.0)
        step = tl.math.div_rn(clip, tl.full(clip.shape, Q, tl.float32))
        down = (step.to(tl.int32, bitcast=True) - 1).to(tl.float32, bitcast=True)
        step = tl.where(step * Q == float('inf'), down, step)  # Q * step must stay finite
        return tl.where(valid, step, float('nan'))

    @triton.jit
    def _bin_weights(cnt_ptr, sum_ptr, rows, bins, ok, zeros, alpha):
        # The objective's weight w = n * exp(alpha * (mean - 1)) of bins [BLOCK_C, BLOCK_B] and
        # w * mean (float64); bin 0 without the exact zeros, empty bins weigh 0.
        n = tl.load(cnt_ptr + rows + bins, mask=ok, other=0, cache_modifier='.cg')
        s = tl.load(sum_ptr + rows + bins, mask=ok, other=0.0, cache_modifier='.cg')
        n = n.to(tl.float64)
        n = tl.where(bins == 0, tl.maximum(n - zeros[:, None], 0.0), n)
        mean = s / tl.maximum(n, 1.0)
        w = n * tl.exp(alpha * (mean - 1.0))
        return w, w * mean

    @triton.jit
    def _objective_ratio(cnt_ptr, sum_ptr, c, live, zeros, count, num_bins, alpha,
                         Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
        # The clip ratio u = (j + 1) / B minimising histogram_clip.objective_curve_from_
        # histograms (ties to the larger u) for channels c (float32 [BLOCK_C]; 1 where not
        # live); resets the channels' histograms to zero.
        rows = c[:, None].to(tl.int64) * num_bins
        lanes = tl.arange(0, BLOCK_B)[None, :]
        live2 = live[:, None]
        total = tl.zeros((BLOCK_C, ), tl.float64)
        for b0 in range(0, num_bins, BLOCK_B):
            bins = b0 + lanes
            w, _ = _bin_weights(cnt_ptr, sum_ptr, rows, bins, live2 & (bins < num_bins), zeros,
                                alpha)
            total += tl.sum(w, axis=1)
        # From the top bin down: above_* of candidate j are the suffix sums over bins > j, the
        # bins of the chunks done (carry) plus those after j in this chunk (a reverse cumsum
        # of the weights shifted by one bin, not a difference: no cancellation).
        carry_w = tl.zeros((BLOCK_C, ), tl.float64)
        carry_wx = tl.zeros((BLOCK_C, ), tl.float64)
        best_e = tl.full((BLOCK_C, ), float('inf'), tl.float64)
        best_j = tl.full((BLOCK_C, ), 0, tl.int32) + num_bins - 1
        chunks = tl.cdiv(num_bins, BLOCK_B)
        for k in range(0, chunks):
            b0 = (chunks - 1 - k) * BLOCK_B
            bins = b0 + lanes
            in_range = bins < num_bins
            w, wx = _bin_weights(cnt_ptr, sum_ptr, rows, bins, live2 & in_range, zeros, alpha)
            nxt = bins + 1
            w1, wx1 = _bin_weights(cnt_ptr, sum_ptr, rows, nxt,
                                   live2 & (nxt < b0 + BLOCK_B) & (nxt < num_bins), zeros, alpha)
            above_w = carry_w[:, None] + tl.cumsum(w1, axis=1, reverse=True)
            above_wx = carry_wx[:, None] + tl.cumsum(wx1, axis=1, reverse=True)
            u = (bins + 1).to(tl.float64) / num_bins
            rounded = total[:, None] - above_w  # weight inside the clip
            rounded = tl.where(bins == num_bins - 1, rounded - 1.0, rounded)  # abs-max is exact
            energy = above_wx - u * above_w + u / (4.0 * Q) * tl.maximum(rounded, 0.0)
            energy = tl.where(in_range, energy / count, float('inf'))
            chunk_e = tl.min(energy, axis=1)
            chunk_j = tl.max(tl.where(energy == chunk_e[:, None], bins, -1), axis=1)
            better = chunk_e < best_e  # strict: the larger clip of the chunks above wins ties
            best_j = tl.where(better, chunk_j, best_j)
            best_e = tl.where(better, chunk_e, best_e)
            carry_w += tl.sum(w, axis=1)
            carry_wx += tl.sum(wx, axis=1)
            tl.debug_barrier()  # every thread has read the chunk before it is zeroed
            tl.store(cnt_ptr + rows + bins, tl.zeros_like(bins), mask=live2 & in_range)
            tl.store(sum_ptr + rows + bins, tl.zeros_like(w), mask=live2 & in_range)
        ratio = ((best_j + 1).to(tl.float64) / num_bins).to(tl.float32)
        return tl.where(live, ratio, 1.0)

    @triton.jit
    def _channel_totals(part_ptr, c, c_ok, C, splits, SPLITS_P2: tl.constexpr):
        # The partials of channels c added over the splits: abs-max bits (int32), sum of
        # squares, exact zeros and sum of g (float64), each [BLOCK_C].
        s = tl.arange(0, SPLITS_P2)
        ok = c_ok[:, None] & (s < splits)[None, :]
        idx = c[:, None].to(tl.int64) * splits + s[None, :]
        cs = C * splits
        max_bits = tl.max(tl.load(part_ptr + idx, mask=ok, other=0.0), axis=1).to(tl.int32)
        sq = tl.sum(tl.load(part_ptr + cs + idx, mask=ok, other=0.0), axis=1)
        zeros = tl.sum(tl.load(part_ptr + 2 * cs + idx, mask=ok, other=0.0), axis=1)
        total = tl.sum(tl.load(part_ptr + 3 * cs + idx, mask=ok, other=0.0), axis=1)
        return max_bits, sq, zeros, total

    @triton.jit
    def _histogram_split(g_ptr, cnt_ptr, sum_ptr, c, live, m, sigma_rel, j_begin, j_end, C,
                         inner, num_bins, CHANNELS_INNER: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_J: tl.constexpr):
        # Adds values [j_begin, j_end) of channels c to their histograms, x = |g| * (1 / max)
        # as distribution.channel_histograms computes it (the quotient where 1 / max
        # overflows). Bin 0 (most values of a sparse or long-tailed channel) is summed here and
        # added once. Returns the count of x > sigma_rel and bin 0's count and sum, [BLOCK_C].
        one = tl.full((BLOCK_C, ), 1.0, tl.float32)
        inv = tl.math.div_rn(one, m)
        divide = inv == float('inf')
        any_divide = tl.max(divide.to(tl.int32), axis=0) > 0
        bins_f = num_bins.to(tl.float32)
        rows = c[:, None].to(tl.int64) * num_bins
        above = tl.zeros((BLOCK_C, BLOCK_J), tl.int32)
        first_n = tl.zeros((BLOCK_C, BLOCK_J), tl.int32)
        first_x = tl.zeros((BLOCK_C, BLOCK_J), tl.float64)
        for j0 in range(j_begin, j_end, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            ok = live[:, None] & (j < j_end)[None, :]
            a = tl.abs(tl.load(g_ptr + _tile(c, j, C, inner, CHANNELS_INNER), mask=ok,
                               other=0.0))
            if any_divide:
                x = tl.where(divide[:, None], tl.math.div_rn(a, m[:, None] + tl.zeros_like(a)),
                             a * tl.where(divide, 0.0, inv)[:, None])
            else:
                x = a * inv[:, None]
            above += (ok & (x > sigma_rel[:, None])).to(tl.int32)
            b = tl.minimum((x * bins_f).to(tl.int32), num_bins - 1)
            upper = ok & (b > 0)
            tl.atomic_add(cnt_ptr + rows + b, upper.to(tl.int32), mask=upper, sem='relaxed')
            tl.atomic_add(sum_ptr + rows + b, x.to(tl.float64), mask=upper, sem='relaxed')
            low = ok & (b == 0)
            first_n += low.to(tl.int32)
            first_x += tl.where(low, x.to(tl.float64), 0.0)
        return tl.sum(above, axis=1), tl.sum(first_n, axis=1), tl.sum(first_x, axis=1)

    @triton.jit(do_not_specialize=['M', 'per_split', 'splits', 'num_bins'])
    def _grad_histogram_kernel(g_ptr, part_ptr, cnt_ptr, sum_ptr, above_ptr, counter_ptr,
                               stats_ptr, keep_ptr, C, inner, M, per_split, splits, num_bins,
                               alpha: tl.float64, threshold: tl.float32, Q: tl.constexpr,
                               CHANNELS_INNER: tl.constexpr, SPLITS_P2: tl.constexpr,
                               BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
                               BLOCK_B: tl.constexpr, KEEP_STATS: tl.constexpr):
        # cnt: int32 [C, B], sum: float64 [C, B], above: int32 [C] (zero on entry, reset here);
        # counter: int32 [C + 2] = programs done per channel block, channel blocks done, the
        # bits of the tensor abs-max; stats: float32 [5 * C + 1] (rows G_MAX .. GRAD_BIAS,
        # then s_x); keep (KEEP_STATS): float64 [2 * C * B + 2 * C], copies of the histogram
        # counts and sums, then sigma and the exact zeros per channel.
        block = tl.program_id(0)
        split = tl.program_id(1)
        c = block * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        max_bits, sq, zeros, total = _channel_totals(part_ptr, c, c_ok, C, splits, SPLITS_P2)
        finite = max_bits < 0x7F800000  # Inf and NaN bit patterns are the largest
        m_raw = max_bits.to(tl.float32, bitcast=True)
        live = c_ok & finite & (max_bits > 0)  # all-zero and non-finite: no histogram
        m = tl.where(live, m_raw, 1.0)
        count = M.to(tl.float64)
        sigma_rel = (tl.sqrt(sq / count) / m.to(tl.float64)).to(tl.float32)
        j_begin = split * per_split
        j_end = tl.minimum(j_begin + per_split, M)
        above, first_n, first_x = _histogram_split(
            g_ptr, cnt_ptr, sum_ptr, c, live, m, sigma_rel, j_begin, j_end, C, inner, num_bins,
            CHANNELS_INNER, BLOCK_C, BLOCK_J)
        rows = c.to(tl.int64) * num_bins
        tl.atomic_add(cnt_ptr + rows, first_n, mask=live, sem='relaxed')
        tl.atomic_add(sum_ptr + rows, first_x, mask=live, sem='relaxed')
        tl.atomic_add(above_ptr + c, above, mask=live, sem='relaxed')
        tl.debug_barrier()  # all of the program's adds before it counts itself done
        if tl.atomic_add(counter_ptr + block, 1, sem='acq_rel') == splits - 1:
            if KEEP_STATS:
                _keep_stats(cnt_ptr, sum_ptr, keep_ptr, c, c_ok, finite, m_raw, max_bits,
                            sigma_rel, zeros, count, C, num_bins, BLOCK_B)
            _finalize_block(cnt_ptr, sum_ptr, above_ptr, counter_ptr, stats_ptr, block, c, c_ok,
                            live, finite, m_raw, max_bits, zeros, total, count, C, num_bins,
                            alpha, threshold, Q, BLOCK_C, BLOCK_B)

    @triton.jit
    def _keep_stats(cnt_ptr, sum_ptr, keep_ptr, c, c_ok, finite, m_raw, max_bits, sigma_rel,
                    zeros, count, C, num_bins, BLOCK_B: tl.constexpr):
        # Copies what the reference returns (gradient_statistics_reference) into keep: the
        # histograms (an all-zero channel: all its values in bin 0), sigma, the exact zeros.
        rows = c[:, None].to(tl.int64) * num_bins
        empty = (max_bits == 0)[:, None]
        for b0 in range(0, num_bins, BLOCK_B):
            bins = b0 + tl.arange(0, BLOCK_B)[None, :]
            ok = c_ok[:, None] & (bins < num_bins)
            n = tl.load(cnt_ptr + rows + bins, mask=ok, other=0, cache_modifier='.cg')
            s = tl.load(sum_ptr + rows + bins, mask=ok, other=0.0, cache_modifier='.cg')
            n = tl.where(empty & (bins == 0), count, n.to(tl.float64))
            tl.store(keep_ptr + rows + bins, n, mask=ok)
            tl.store(keep_ptr + C * num_bins + rows + bins, s, mask=ok)
        sigma = tl.where(finite, sigma_rel * m_raw, float('nan'))
        tl.store(keep_ptr + 2 * C * num_bins + c, sigma.to(tl.float64), mask=c_ok)
        tl.store(keep_ptr + 2 * C * num_bins + C + c, zeros, mask=c_ok)

    @triton.jit
    def _finalize_block(cnt_ptr, sum_ptr, above_ptr, counter_ptr, stats_ptr, block, c, c_ok,
                        live, finite, m_raw, max_bits, zeros, total, count, C, num_bins, alpha,
                        threshold, Q: tl.constexpr, BLOCK_C: tl.constexpr,
                        BLOCK_B: tl.constexpr):
        # Run by the last program of a channel block: the per-channel results and resets.
        above = tl.load(above_ptr + c, mask=live, other=0, cache_modifier='.cg')
        ratio = _objective_ratio(cnt_ptr, sum_ptr, c, live, zeros, count, num_bins, alpha, Q,
                                 BLOCK_C, BLOCK_B)
        tl.debug_barrier()
        tl.store(above_ptr + c, tl.zeros_like(above), mask=live)
        frac = tl.where(finite, (above.to(tl.float64) / count).to(tl.float32), float('nan'))
        gaussian = frac > threshold  # bell-shaped: clip = abs-max
        clip = tl.where(gaussian, m_raw, ratio * m_raw)
        clip = tl.where(finite, clip, float('nan'))
        tl.store(stats_ptr + G_MAX * C + c, m_raw, mask=c_ok)
        tl.store(stats_ptr + FRAC * C + c, frac, mask=c_ok)
        tl.store(stats_ptr + CLIP * C + c, clip, mask=c_ok)
        tl.store(stats_ptr + SCALE_W * C + c, _scale_from_clip(clip, finite, Q), mask=c_ok)
        tl.store(stats_ptr + GRAD_BIAS * C + c, total.to(tl.float32), mask=c_ok)
        tl.atomic_max(counter_ptr + C + 1, tl.max(tl.where(c_ok, max_bits, 0), axis=0),
                      sem='relaxed')
        tl.atomic_xchg(counter_ptr + block, 0)  # ready for the next call
        tl.debug_barrier()
        if tl.atomic_add(counter_ptr + C, 1, sem='acq_rel') == tl.num_programs(0) - 1:
            # The last channel block: s_x from the tensor abs-max, then the cells reset.
            t_bits = tl.atomic_xchg(counter_ptr + C + 1, 0, sem='acq_rel')
            t_max = t_bits.to(tl.float32, bitcast=True)
            s_x = _scale_from_clip(t_max, t_bits < 0x7F800000, Q)
            tl.store(stats_ptr + 5 * C, s_x)
            tl.atomic_xchg(counter_ptr + C, 0)

    @triton.jit
    def _codes(v, step, Q: tl.constexpr):
        # quantize_int8_reference with nearest rounding: clamp(v / step) rounded half to even
        # (adding 1.5 * 2**23 rounds |t| <= Q < 2**22 to an integer); 0 where the step is 0
        # or NaN, or v is not finite.
        step = step + tl.zeros_like(v)  # [BLOCK_C, BLOCK_J]
        usable = step > 0.0
        t = tl.math.div_rn(v, tl.where(usable, step, 1.0))
        t = tl.minimum(tl.maximum(t, -Q), Q)
        t = (t + 12582912.0) - 12582912.0
        keep = usable & (tl.abs(v) < float('inf'))
        return tl.where(keep, t, 0.0).to(tl.int8)

    @triton.jit
    def _grad_codes_kernel(g_ptr, stats_ptr, q_w_ptr, q_x_ptr, prev_ptr, ratio_ptr, gauss_ptr,
                           C, inner, M, lam, Q: tl.constexpr, CHANNELS_INNER: tl.constexpr,
                           KEEP_STATE: tl.constexpr, HAS_HISTORY: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr):
        # g: float32 [outer, C, inner]; q_w, q_x: int8 [M, C] (channels last), the codes for
        # the scale per channel (stats row SCALE_W) and per tensor (stats[5 * C]).
        # KEEP_STATE: the first program of each channel block also updates DAQ's clip state
        # (float32 [C] each, in place) as DAQScheme._keep_clip does: prev = clip and ratio =
        # clip / |g|max (1 for an all-zero channel), each keeping its old value (HAS_HISTORY)
        # where the new one is not finite; and gauss (bool [C]) = P(|g| > sigma) > lam.
        j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        if KEEP_STATE:
            if tl.program_id(0) == 0:
                g_max = tl.load(stats_ptr + G_MAX * C + c, mask=c_ok, other=0.0)
                clip = tl.load(stats_ptr + CLIP * C + c, mask=c_ok, other=0.0)
                frac = tl.load(stats_ptr + FRAC * C + c, mask=c_ok, other=0.0)
                ratio = tl.where(g_max > 0.0,
                                 tl.math.div_rn(clip, tl.where(g_max > 1e-30, g_max, 1e-30)),
                                 1.0)
                if HAS_HISTORY:
                    ratio = tl.where(_finite(ratio), ratio,
                                     tl.load(ratio_ptr + c, mask=c_ok, other=0.0))
                    clip = tl.where(_finite(clip), clip,
                                    tl.load(prev_ptr + c, mask=c_ok, other=0.0))
                tl.store(ratio_ptr + c, ratio, mask=c_ok)
                tl.store(prev_ptr + c, clip, mask=c_ok)
                tl.store(gauss_ptr + c, frac > lam, mask=c_ok)
        ok = c_ok[:, None] & (j < M)[None, :]
        v = tl.load(g_ptr + _tile(c, j, C, inner, CHANNELS_INNER), mask=ok, other=0.0)
        s_w = tl.load(stats_ptr + SCALE_W * C + c, mask=c_ok, other=0.0)
        s_x = tl.load(stats_ptr + 5 * C)
        out = j[None, :].to(tl.int64) * C + c[:, None]
        tl.store(q_w_ptr + out, _codes(v, s_w[:, None], Q), mask=ok)
        tl.store(q_x_ptr + out, _codes(v, s_x, Q), mask=ok)
