"""Model + batched encoder + loss together: gradients reach every part and SGD lowers the loss."""
import torch

from ssd import SSD300, Encoder, Loss, dboxes300_coco


def test_sgd_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    dboxes = dboxes300_coco()
    model = SSD300(label_num=5)
    model.train()
    loss_fn = Loss(dboxes)
    images = torch.randn(2, 3, 300, 300)
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.6], [0.6, 0.2, 0.9, 0.5]], [[0.3, 0.3, 0.8, 0.9], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 4], [2, 0]])
    gloc, glabel = Encoder(dboxes).encode_batch(boxes, labels)
    gloc = gloc.transpose(1, 2).contiguous()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = loss_fn(*model(images), gloc, glabel)
        loss.backward()
        if step == 0:
            # only positive or mined anchors carry loss; these boxes are positives on levels 1 to 4
            for param in (model.model.layer1[0].weight, model.additional_blocks[0][2].weight,
                          model.loc[1].weight, model.conf[1].weight, model.loc[3].weight):
                assert param.grad.abs().sum() > 0
        optimizer.step()
        losses.append(loss.item())
    assert torch.isfinite(torch.tensor(losses)).all()
    assert losses[2] < losses[0]
