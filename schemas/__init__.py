"""seqwatch.schemas"""
