"""SSD Loss: hand-computed values on an 8-anchor box set, zero positives, mining, reference parity."""
import math

import torch
import torch.nn.functional as F

from ssd import DefaultBoxes, Loss, dboxes300_coco

# 2x2 grid, two shapes: 8 anchors; anchor 0 is the top-left quadrant (0.25, 0.25, 0.5, 0.5).
SMALL = DefaultBoxes(2, [2], [1], [1, 2], [[]])
A = 8


def negatives_case():
    """One image, anchor 0 positive (label 1); negative k's logits [0, s_k, 0] so CE_k = log(2 + e^s_k)."""
    s = torch.tensor([5.0, 1.0, 3.0, 0.0, 4.0, 2.0, -1.0])  # anchors 1..7
    plabel = torch.zeros(1, 3, A)
    plabel[0, 1, 1:] = s
    glabel = torch.zeros(1, A, dtype=torch.long)
    glabel[0, 0] = 1
    gloc = SMALL(order="xywh").t()[None].clone()  # targets = the anchors themselves: offsets 0
    ploc = torch.full((1, 4, A), 0.7)  # ignored everywhere but anchor 0
    ploc[0, :, 0] = torch.tensor([0.5, -2.0, 0.1, 0.0])
    return ploc, plabel, gloc, glabel, s


def test_hand_computed_single_image():
    ploc, plabel, gloc, glabel, s = negatives_case()
    sl1 = 0.5 * 0.5**2 + (2.0 - 0.5) + 0.5 * 0.1**2 + 0.0  # smooth-L1 (beta 1) summed over 4 coords
    ce_pos = math.log(3.0)  # uniform logits, target 1
    top3 = sorted((math.log(2 + math.exp(v)) for v in s.tolist()), reverse=True)[:3]  # s = 5, 4, 3
    expected = (sl1 + ce_pos + sum(top3)) / 1
    torch.testing.assert_close(Loss(SMALL)(ploc, plabel, gloc, glabel), torch.tensor(expected))


def test_image_without_positives_contributes_zero_to_the_mean():
    ploc, plabel, gloc, glabel, _ = negatives_case()
    single = Loss(SMALL)(ploc, plabel, gloc, glabel)
    empty = torch.zeros(1, A, dtype=torch.long)
    batch = Loss(SMALL)(torch.cat((ploc, ploc)), torch.cat((plabel, plabel)), torch.cat((gloc, gloc)),
                        torch.cat((glabel, empty)))
    torch.testing.assert_close(batch, single / 2)
    zero = Loss(SMALL)(ploc, plabel, gloc, empty)
    assert zero.item() == 0.0


def test_offsets_use_variances():
    anchors = SMALL(order="xywh")
    gloc = anchors.t()[None].clone()
    gloc[0, :, 0] = torch.tensor([0.3, 0.2, 0.5 * math.exp(0.4), 0.5])  # shifted and widened anchor 0
    loc = Loss(SMALL)._loc_vec(gloc)[0, :, 0]
    torch.testing.assert_close(loc, torch.tensor([10 * 0.05 / 0.5, 10 * -0.05 / 0.5, 5 * 0.4, 0.0]))
    glabel = torch.zeros(1, A, dtype=torch.long)
    glabel[0, 0] = 2
    ploc = torch.zeros(1, 4, A)
    plabel = torch.zeros(1, 3, A)
    plabel[0, 0, 1:] = 30.0  # negatives confidently right: their CE ~ 0
    expected = (0.5 + 0.5 + 1.5 + 0.0) + math.log(3.0)  # |d| = 1, 1, 2, 0 -> smooth-L1 0.5, 0.5, 1.5, 0
    torch.testing.assert_close(Loss(SMALL)(ploc, plabel, gloc, glabel), torch.tensor(expected), atol=1e-5, rtol=0)


def test_mining_gradient_reaches_only_the_top_3p_negatives():
    ploc, plabel, gloc, glabel, s = negatives_case()
    plabel.requires_grad_(True)
    Loss(SMALL)(ploc, plabel, gloc, glabel).backward()
    touched = plabel.grad.abs().sum(dim=1)[0] > 0
    assert touched.tolist() == [True, True, False, True, False, True, False, False]  # pos + s = 5, 3, 4


def test_more_mined_than_negatives_counts_each_once():
    ploc, plabel, gloc, glabel, _ = negatives_case()
    glabel[0, :3] = torch.tensor([1, 2, 1])  # 3 positives -> 9 mined > 5 negatives: all of them, once
    con = F.cross_entropy(plabel, glabel, reduction="none")[0]
    sl1 = F.smooth_l1_loss(ploc, Loss(SMALL)._loc_vec(gloc), reduction="none").sum(dim=1)[0][:3].sum()
    expected = (sl1 + con.sum()) / 3
    torch.testing.assert_close(Loss(SMALL)(ploc, plabel, gloc, glabel), expected)


def reference_loss(dboxes, ploc, plabel, gloc, glabel):
    """The reference's forward step by step (boolean-mask write and all) as an independent oracle."""
    anchors = dboxes(order="xywh").t()[None]
    vec = torch.cat((10 * (gloc[:, :2] - anchors[:, :2]) / anchors[:, 2:], 5 * (gloc[:, 2:] / anchors[:, 2:]).log()), 1)
    mask = glabel > 0
    pos_num = mask.sum(dim=1)
    sl1 = (mask.float() * F.smooth_l1_loss(ploc, vec, reduction="none").sum(dim=1)).sum(dim=1)
    con = F.cross_entropy(plabel, glabel, reduction="none")
    con_neg = con.clone()
    con_neg[mask] = 0
    _, con_idx = con_neg.sort(dim=1, descending=True)
    _, con_rank = con_idx.sort(dim=1)
    neg_mask = con_rank < torch.clamp(3 * pos_num, max=mask.size(1)).unsqueeze(-1)
    closs = (con * (mask.float() + neg_mask.float())).sum(dim=1)
    num_mask = (pos_num > 0).float()
    return ((sl1 + closs) * num_mask / pos_num.float().clamp(min=1e-6)).mean(dim=0)


def test_matches_reference_on_random_ssd300_batch():
    dboxes = dboxes300_coco()
    gen = torch.Generator().manual_seed(0)
    n = 3
    ploc = torch.randn(n, 4, 8732, generator=gen)
    plabel = torch.randn(n, 81, 8732, generator=gen)
    glabel = torch.randint(1, 81, (n, 8732), generator=gen) * (torch.rand(n, 8732, generator=gen) < 0.01)
    glabel[2] = 0
    anchors = dboxes(order="xywh").t()
    gloc = anchors * torch.exp(0.1 * torch.randn(n, 4, 8732, generator=gen))
    expected = reference_loss(dboxes, ploc, plabel, gloc, glabel)
    torch.testing.assert_close(Loss(dboxes)(ploc, plabel, gloc, glabel), expected, rtol=1e-5, atol=1e-5)
