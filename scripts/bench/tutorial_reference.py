#!/usr/bin/env python3
"""The Azure ML tutorial's original train.py, re-implemented faithfully as the benchmark's baseline.

torchvision's CIFAR10 dataset, per-image ToTensor + Normalize transforms, DataLoader(batch_size=4, shuffle=True,
num_workers=2), the tutorial's Net, SGD, 2 epochs, the loss printed every 2000 mini-batches. Two changes, both
needed to measure it and neither making it slower: the test set is scored at the end (the tutorial never does), and
the Azure ML Run is left out (offline it only prints; importing the SDK would add seconds to the baseline's time).
torchvision's md5 check is skipped so re-encoded batches (such as the JPEG copy of CIFAR-10) load.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms
from torch import nn


class Net(nn.Module):  # the tutorial's model.py
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CIFAR10(torchvision.datasets.CIFAR10):
    # The batches are re-encoded: their md5 cannot match the original archive's. None = only check the file exists.
    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_path", type=str, help="Path to the training data")
    parser.add_argument("--learning_rate", type=float, default=0.001, help="Learning rate for SGD")
    parser.add_argument("--momentum", type=float, default=0.9, help="Momentum for SGD")
    parser.add_argument("--result", help="write test accuracy and timings here as JSON (benchmark only)")
    args = parser.parse_args()
    started = time.perf_counter()

    print("===== DATA =====")
    print("DATA PATH: " + args.data_path)
    print("LIST FILES IN DATA PATH...")
    print(os.listdir(args.data_path))
    print("================")

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = CIFAR10(root=args.data_path, train=True, download=False, transform=transform)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True, num_workers=2)

    net = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=args.learning_rate, momentum=args.momentum)
    train_started = time.perf_counter()
    for epoch in range(2):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 2000 == 1999:
                loss = running_loss / 2000
                print(f"epoch={epoch + 1}, batch={i + 1:5}: loss {loss:.2f}", flush=True)
                running_loss = 0.0
    train_seconds = time.perf_counter() - train_started
    print("Finished Training")

    testset = CIFAR10(root=args.data_path, train=False, download=False, transform=transform)
    testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False, num_workers=2)
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            predicted = net(images).argmax(1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print(f"test accuracy: {correct / total:.2%}")
    if args.result:
        with open(args.result, "w") as f:
            json.dump({"test_accuracy": correct / total, "train_seconds": train_seconds,
                       "seconds": time.perf_counter() - started}, f)


if __name__ == "__main__":
    main()
