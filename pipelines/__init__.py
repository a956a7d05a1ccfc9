"""seqwatch.pipelines"""
