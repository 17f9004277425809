"""One SGD step of the tutorial's Net written out by hand: forward, gradients and the momentum update, no autograd.

At the tutorial's batch of 4 a step is ~1 ms of tiny kernels, and what autograd, nn.Module calls and torch.optim add
around them is a fifth of it (make bench). This computes the same thing as `CrossEntropyLoss()(net(x), y).backward()`
followed by `SGD(lr, momentum).step()`, with the same ATen kernels autograd would call, in the same order; the test
suite checks the weights against that reference. ReLU is applied after each max-pool rather than before: max and ReLU
commute (both values and gradients), and the ReLU then touches a quarter of the numbers.

It also spares the process torch.optim, whose first optimizer imports torch._dynamo (~1 s here).
"""

import torch
from torch import Tensor

from trainjob.models import Net

aten = torch.ops.aten
POOL = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # Net's MaxPool2d(2, 2): kernel, stride, padding, dilation, ceil_mode
CONV = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)  # Net's 5x5 convs: stride, padding, dilation, transposed, ..., groups


class NetSGD:
    """SGD with momentum (PyTorch's update: buf = momentum * buf + grad, then p -= lr * buf) on models.Net."""

    def __init__(self, net: Net, lr: float, momentum: float):
        self.net, self.lr, self.momentum = net, lr, momentum
        self.params = [net.conv1.weight, net.conv1.bias, net.conv2.weight, net.conv2.bias, net.fc1.weight,
                       net.fc1.bias, net.fc2.weight, net.fc2.bias, net.fc3.weight, net.fc3.bias]
        if len(self.params) != len(list(net.parameters())):
            raise ValueError("NetSGD knows Net's ten parameters and no others")
        self.momentum_buffers: list[Tensor] | None = None  # created at the first step, as torch.optim.SGD does
        self._minus_one = torch.tensor([[-1.0]], device=net.conv1.weight.device)

    @torch.no_grad()
    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """One step on a normalised batch x (B, 3, 32, 32) float with labels y (B,); returns the mean loss (0-d)."""
        w1, b1, w2, b2, w3, b3, w4, b4, w5, b5 = self.params
        n = x.shape[0]
        # Forward, keeping what the backward pass needs.
        c1 = torch.conv2d(x, w1, b1)
        p1, where1 = aten.max_pool2d_with_indices(c1, *POOL)
        p1 = p1.relu_()
        c2 = torch.conv2d(p1, w2, b2)
        p2, where2 = aten.max_pool2d_with_indices(c2, *POOL)
        p2 = p2.relu_()
        flat = p2.view(n, -1)
        h1 = torch.addmm(b3, flat, w3.t()).relu_()
        h2 = torch.addmm(b4, h1, w4.t()).relu_()
        logits = torch.addmm(b5, h2, w5.t())
        log_probs = torch.log_softmax(logits, 1)
        loss = -log_probs.gather(1, y[:, None]).mean()

        # Backward: d(mean cross-entropy)/d(logits) = (softmax - one_hot) / n, then layer by layer.
        g = log_probs.exp_().scatter_add_(1, y[:, None], self._minus_one.expand(n, 1)).div_(n)
        grads = [None] * 10
        grads[8], grads[9] = g.t().mm(h2), g.sum(0)
        g = aten.threshold_backward(g.mm(w5), h2, 0)
        grads[6], grads[7] = g.t().mm(h1), g.sum(0)
        g = aten.threshold_backward(g.mm(w4), h1, 0)
        grads[4], grads[5] = g.t().mm(flat), g.sum(0)
        g = aten.threshold_backward(g.mm(w3).view_as(p2), p2, 0)
        g = aten.max_pool2d_with_indices_backward(g, c2, *POOL, where2)
        g, grads[2], grads[3] = aten.convolution_backward(g, p1, w2, [w2.shape[0]], *CONV, [True, True, True])
        g = aten.threshold_backward(g, p1, 0)
        g = aten.max_pool2d_with_indices_backward(g, c1, *POOL, where1)
        _, grads[0], grads[1] = aten.convolution_backward(g, x, w1, [w1.shape[0]], *CONV, [False, True, True])

        first = self.momentum_buffers is None
        if first:
            self.momentum_buffers = [torch.empty_like(p) for p in self.params]
        # torch.optim.SGD(fused=True)'s kernel; on the first step it sets each buffer to the gradient.
        torch._fused_sgd_(self.params, grads, self.momentum_buffers, weight_decay=0.0, momentum=self.momentum,
                          lr=self.lr, dampening=0.0, nesterov=False, maximize=False, is_first_step=first)
        return loss
