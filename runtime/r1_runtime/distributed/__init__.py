"""The ranks of one replica over torch.distributed: joining the group (`group`), the step
message rank 0 sends the others (`messages`), one rank's part of a step (`stage`), rank 0's
model runner (`driver`) and the other ranks' loop (`worker`)."""
