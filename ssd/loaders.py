"""The SSD run's data loaders: torch's DataLoader, or Habana's media loader in the reference's
data layout (``--dl-worker-type HABANA``); the training sampler that a resume positions; the val
split sharded by rank (or scored by rank 0 alone, ``--disable-distributed-validation``)."""
from types import SimpleNamespace

from torch.utils.data import DataLoader

from accel.errors import UserError
from accel.policy import loader_class, pin_memory_kwargs
from accel.preemption import shield_worker
from ssd.data import EncodedTargets, EpochSampler, collate, collate_encoded
from ssd.reference_utils import ReferenceBatches, ReferenceLayout


def make_loaders(args, info, device, train_set, val_set, encoder, seed):
    """(train_loader, sampler, targets_encoded, val_loader) as a namespace; the training three are
    None without a training split (``--eval-only``)."""
    cls = loader_class(args.dl_worker_type, device)
    common = dict(collate_fn=collate, num_workers=args.num_workers, worker_init_fn=shield_worker,
                  **pin_memory_kwargs(device))
    out = SimpleNamespace(train_loader=None, sampler=None, targets_encoded=None)
    if train_set is not None:
        out.train_loader, out.sampler, out.targets_encoded = train_loader(
            cls, common, args, info, device, train_set, encoder, seed)
    out.val_loader = val_loader(cls, common, args, info, device, val_set)
    return out


def val_loader(cls, common, args, info, device, val_set):
    rank0 = info.rank == 0
    if args.disable_distributed_validation:   # the reference: rank 0 scores every image
        shard = range(len(val_set)) if rank0 else range(0)
    else:
        shard = range(info.rank, len(val_set), info.world_size)
    val_batch = args.val_batch_size or args.batch_size
    if cls is DataLoader or (args.disable_distributed_validation and not rank0):
        return DataLoader(val_set, batch_size=val_batch, sampler=list(shard), **common)
    # any sampler makes the vendor pipeline shard by rank itself; rank 0 alone takes all (None)
    val_sampler = None if args.disable_distributed_validation else list(shard)
    layout = dict(num_workers=args.num_workers, shuffle=False, **pin_memory_kwargs(device))
    return ReferenceBatches(cls(ReferenceLayout(val_set), batch_size=val_batch, sampler=val_sampler, **layout))


def train_loader(cls, common, args, info, device, train_set, encoder, seed):
    """(loader, sampler, whether its targets come encoded)."""
    sampler = EpochSampler(len(train_set), args.batch_size, info.rank, info.world_size, seed)
    if sampler.batches_per_epoch == 0:
        raise UserError(f"--batch-size {args.batch_size} x {info.world_size} process(es) is larger than "
                        f"the {len(train_set)} training images")
    encoded = cls is not DataLoader or args.encode_in == "workers"
    if cls is DataLoader:
        dataset, train_common = train_set, common
        if args.encode_in == "workers":
            dataset = EncodedTargets(train_set, encoder)
            train_common = dict(common, collate_fn=collate_encoded)
        return DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                          **train_common), sampler, encoded
    # --dl-worker-type HABANA on HPU: the reference's data layout and call (no collate_fn, which
    # its SSD pipelines refuse); its training targets come encoded.
    layout = dict(num_workers=args.num_workers, shuffle=False, **pin_memory_kwargs(device))
    return ReferenceBatches(cls(ReferenceLayout(train_set), batch_size=args.batch_size, sampler=sampler,
                                drop_last=True, **layout)), sampler, encoded
